//! Counts of what each tenant or node holds open at once (watches, connections), each bounded:
//! one principal's clients cannot take what the others need. The admin is not counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shoal_api::Reason;

use super::auth::Principal;
use super::error::ApiError;

/// How many of one thing each principal holds, at most `limit` each.
pub struct PerPrincipal {
    what: &'static str,
    limit: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One held, given back when dropped.
pub struct Held {
    open: Arc<Mutex<HashMap<String, usize>>>,
    who: Option<String>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(who) = &self.who else { return };
        let mut open = self.open.lock().expect("per-principal count lock");
        if let Some(n) = open.get_mut(who) {
            *n -= 1;
            if *n == 0 {
                open.remove(who);
            }
        }
    }
}

impl PerPrincipal {
    /// At most `limit` of `what` (a plural noun, for the refusal) per principal.
    pub fn new(what: &'static str, limit: usize) -> Self {
        PerPrincipal { what, limit, open: Arc::default() }
    }

    /// Counts one more for `principal`, or refuses it (429) past the limit.
    pub fn take(&self, principal: &Principal) -> Result<Held, ApiError> {
        let who = match principal {
            Principal::Admin => None,
            Principal::Tenant { name, .. } => Some(format!("tenant {name}")),
            Principal::Node { name } => Some(format!("node {name}")),
        };
        if let Some(who) = &who {
            let mut open = self.open.lock().expect("per-principal count lock");
            let n = open.entry(who.clone()).or_default();
            if *n >= self.limit {
                let what = self.what;
                return Err(ApiError::new(
                    Reason::TooManyRequests,
                    format!("{who} has {n} {what} open, the most it may; close one first"),
                ));
            }
            *n += 1;
        }
        Ok(Held { open: self.open.clone(), who })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_principal_holds_at_most_the_limit_and_gets_them_back() {
        let counter = PerPrincipal::new("watches", 2);
        let tenant = Principal::Tenant { name: "a".into(), namespaces: Arc::default() };
        let other = Principal::Tenant { name: "b".into(), namespaces: Arc::default() };
        let first = counter.take(&tenant).unwrap();
        let _second = counter.take(&tenant).unwrap();
        let refused = counter.take(&tenant).err().unwrap();
        assert!(refused.0.message.contains("tenant a has 2 watches open"), "{refused:?}");
        counter.take(&other).unwrap();
        drop(first);
        counter.take(&tenant).unwrap();
        for _ in 0..10 {
            std::mem::forget(counter.take(&Principal::Admin).unwrap());
        }
    }
}
