//! Applying committed entries to the overlay: what each command does to an object.
//!
//! Create fails on an existing key; update with a resourceVersion fails when it is stale, and
//! without one creates or replaces spec, labels and annotations (keeping uid, creation time and
//! status); an update that changes nothing is a no-op; a spec change bumps `generation`. Every
//! write sets `resourceVersion` to the entry's log index and records a change in the history. A
//! batch entry applies its commands in order, at one revision. Commands carry everything
//! non-deterministic, so every member applies them identically. Applies only read the file:
//! the writer writes the overlay out later (`unflushed::flush_in`).

use std::sync::RwLock;

use openraft::EntryPayload;
use redb::{Database, ReadOnlyTable, ReadableDatabase};
use serde_json::Value;

use shoal_api::module::{MAX_MODULES_PER_NAMESPACE, MODULES, ModuleRecord};
use shoal_api::quantity::Memory;

use super::db::{OBJECTS, io_err};
use super::history::{Change, ChangeKind, history_key};
use super::types::{Command, CommandResult, Entry, ObjectKey, StorageError, StoredMembership, UpdateScope};
use super::unflushed::Unflushed;

/// What one apply job writes to (the overlay) and reads from (the overlay, then the file).
struct Tables<'t> {
    unflushed: &'t mut Unflushed,
    objects: ReadOnlyTable<&'static str, &'static [u8]>,
    /// Changes recorded so far at the current revision (a batch entry records several).
    seq: u64,
}

fn parse_object(bytes: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("object is not a JSON object".into()),
        Err(e) => Err(format!("object is not JSON: {e}")),
    }
}

fn meta_u64(object: &Value, field: &str) -> Option<u64> {
    object.get("metadata")?.get(field)?.as_u64()
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if value.is_null() {
            meta.remove(field);
        } else {
            meta.insert(field.to_owned(), value);
        }
    }
}

/// The fields of an object a spec update may change; if none changed, the update is a no-op.
fn user_fields(object: &Value) -> (Option<&Value>, Option<&Value>, Option<&Value>) {
    let meta = object.get("metadata");
    (object.get("spec"), meta.and_then(|m| m.get("labels")), meta.and_then(|m| m.get("annotations")))
}

/// `object` with its status replaced (`None` or `null`: removed).
fn with_status(object: &Value, status: Option<Value>) -> Value {
    let mut next = object.clone();
    match status.filter(|s| !s.is_null()) {
        Some(status) => next["status"] = status,
        None => {
            next.as_object_mut().map(|o| o.remove("status"));
        }
    }
    next
}

impl Tables<'_> {
    /// Writes `next` over `old` at `revision`, unless it changes nothing.
    fn modify(
        &mut self,
        revision: u64,
        key: &ObjectKey,
        old: Value,
        mut next: Value,
    ) -> Result<CommandResult, StorageError> {
        if next == old {
            return Ok(CommandResult::Ok { object: Some(serde_json::to_vec(&old).map_err(io_err)?) });
        }
        set_meta(&mut next, "resourceVersion", revision.into());
        let written = self.record(revision, ChangeKind::Modified, &key.0, &next)?;
        Ok(CommandResult::Ok { object: Some(written) })
    }

    fn record(&mut self, revision: u64, kind: ChangeKind, key: &str, object: &Value) -> Result<Vec<u8>, StorageError> {
        let bytes = serde_json::to_vec(object).map_err(io_err)?;
        let change = Change { revision, kind, key: key.to_owned(), object: bytes.clone() };
        self.unflushed.history.insert(history_key(revision, self.seq), change);
        self.seq += 1;
        let stored = (kind != ChangeKind::Deleted).then(|| bytes.clone());
        self.unflushed.objects.insert(key.to_owned(), stored);
        Ok(bytes)
    }

    fn current(&self, key: &ObjectKey) -> Result<Option<Value>, StorageError> {
        let parse = |bytes: &[u8]| parse_object(bytes).map_err(|e| io_err(std::io::Error::other(e)));
        match self.unflushed.object(&key.0) {
            Some(Some(bytes)) => Ok(Some(parse(bytes)?)),
            Some(None) => Ok(None),
            None => match self.objects.get(key.0.as_str()).map_err(io_err)? {
                Some(v) => Ok(Some(parse(v.value())?)),
                None => Ok(None),
            },
        }
    }

    fn apply(&mut self, revision: u64, command: Command) -> Result<CommandResult, StorageError> {
        let invalid = |message: String| Ok(CommandResult::Invalid { message });
        let stale = |current: &Value, expected: Option<u64>| {
            let rv = meta_u64(current, "resourceVersion").unwrap_or(0);
            expected.filter(|e| *e != rv).map(|_| CommandResult::Conflict { current: rv })
        };
        let done = |bytes: Vec<u8>| Ok(CommandResult::Ok { object: Some(bytes) });
        match command {
            Command::Create { key, object } => {
                let mut object = match parse_object(&object) {
                    Ok(o) => o,
                    Err(e) => return invalid(e),
                };
                if self.current(&key)?.is_some() {
                    return Ok(CommandResult::AlreadyExists);
                }
                if let Some(why) = self.closed_namespace(&key.0)? {
                    return invalid(why);
                }
                if let Some(why) = self.missing_module(&key.0, &object)? {
                    return invalid(why);
                }
                set_meta(&mut object, "resourceVersion", revision.into());
                set_meta(&mut object, "generation", 1.into());
                done(self.record(revision, ChangeKind::Added, &key.0, &object)?)
            }
            Command::Update { key, object, expected, scope } => {
                let mut new = match parse_object(&object) {
                    Ok(o) => o,
                    Err(e) => return invalid(e),
                };
                // Only a changed module is checked: a Workload written before the check existed
                // keeps taking the updates that leave its module alone.
                let old = self.current(&key)?;
                let module = |o: &Value| o.pointer("/spec/module").cloned();
                if scope == UpdateScope::Spec
                    && old.as_ref().and_then(module) != module(&new)
                    && let Some(why) = self.missing_module(&key.0, &new)?
                {
                    return invalid(why);
                }
                let Some(old) = old else {
                    if expected.is_some() || scope == UpdateScope::Status {
                        return Ok(CommandResult::NotFound);
                    }
                    if let Some(why) = self.closed_namespace(&key.0)? {
                        return invalid(why);
                    }
                    set_meta(&mut new, "resourceVersion", revision.into());
                    set_meta(&mut new, "generation", 1.into());
                    return done(self.record(revision, ChangeKind::Added, &key.0, &new)?);
                };
                if let Some(conflict) = stale(&old, expected) {
                    return Ok(conflict);
                }
                let next = match scope {
                    UpdateScope::Status => with_status(&old, new.get_mut("status").map(Value::take)),
                    UpdateScope::Spec => {
                        if user_fields(&old) == user_fields(&new) {
                            return done(serde_json::to_vec(&old).map_err(io_err)?);
                        }
                        let spec_changed = old.get("spec") != new.get("spec");
                        let generation = meta_u64(&old, "generation").unwrap_or(1) + u64::from(spec_changed);
                        for field in ["uid", "creationTimestamp", "ownerReferences"] {
                            let kept = old["metadata"].get(field).cloned().unwrap_or(Value::Null);
                            set_meta(&mut new, field, kept);
                        }
                        set_meta(&mut new, "generation", generation.into());
                        match old.get("status") {
                            Some(status) => new["status"] = status.clone(),
                            None => {
                                new.as_object_mut().map(|o| o.remove("status"));
                            }
                        }
                        new
                    }
                };
                self.modify(revision, &key, old, next)
            }
            Command::Report { key, node, status, expected } => {
                let status = match serde_json::from_slice::<Value>(&status) {
                    Ok(status) => status,
                    Err(e) => return invalid(format!("status is not JSON: {e}")),
                };
                let Some(old) = self.current(&key)? else {
                    return Ok(CommandResult::NotFound);
                };
                if old.get("spec").and_then(|s| s.get("node")).and_then(Value::as_str) != Some(node.as_str()) {
                    return Ok(CommandResult::NotBound);
                }
                if let Some(conflict) = stale(&old, expected) {
                    return Ok(conflict);
                }
                let next = with_status(&old, Some(status));
                self.modify(revision, &key, old, next)
            }
            Command::Delete { key, expected } => {
                let Some(mut old) = self.current(&key)? else {
                    return Ok(CommandResult::NotFound);
                };
                if let Some(conflict) = stale(&old, expected) {
                    return Ok(conflict);
                }
                if let Some(user) = self.module_user(&key.0)? {
                    return invalid(format!("the module is used by {user}"));
                }
                set_meta(&mut old, "resourceVersion", revision.into());
                done(self.record(revision, ChangeKind::Deleted, &key.0, &old)?)
            }
            Command::Bind { key, node, expected } => {
                let Some(mut old) = self.current(&key)? else {
                    return Ok(CommandResult::NotFound);
                };
                if let Some(conflict) = stale(&old, Some(expected)) {
                    return Ok(conflict);
                }
                let Some(spec) = old.get_mut("spec").and_then(Value::as_object_mut) else {
                    return invalid(format!("{} has no spec to bind", key.0));
                };
                if spec.get("node").is_some_and(|n| !n.is_null()) {
                    // Bound already: a bind never moves an instance.
                    return Ok(CommandResult::Conflict { current: expected });
                }
                spec.insert("node".into(), Value::String(node));
                let generation = meta_u64(&old, "generation").unwrap_or(1) + 1;
                set_meta(&mut old, "generation", generation.into());
                set_meta(&mut old, "resourceVersion", revision.into());
                done(self.record(revision, ChangeKind::Modified, &key.0, &old)?)
            }
            Command::Batch(commands) => {
                let results = commands.into_iter().map(|c| self.apply(revision, c)).collect::<Result<_, _>>()?;
                Ok(CommandResult::Batch(results))
            }
            Command::PutModule { namespace, digest, size, uploaded } => {
                let key = ObjectKey::new(MODULES, Some(&namespace), &digest);
                if let Some(existing) = self.current(&key)? {
                    return done(serde_json::to_vec(&existing).map_err(io_err)?);
                }
                if let Some(why) = self.closed_namespace(&key.0)? {
                    return invalid(why);
                }
                let records = self.with_prefix(&ObjectKey::prefix(MODULES, Some(&namespace)))?;
                if records.len() >= MAX_MODULES_PER_NAMESPACE {
                    return invalid(format!(
                        "namespace {namespace} holds {MAX_MODULES_PER_NAMESPACE} modules, the most it may; delete unused ones first"
                    ));
                }
                if let Some(limit) = self.module_quota(&namespace)? {
                    let used = records.values().fold(0u64, |sum, bytes| sum.saturating_add(record_size(bytes)));
                    if used.saturating_add(size) > limit {
                        return Ok(CommandResult::QuotaExceeded { used, limit });
                    }
                }
                let record = ModuleRecord { digest, size, uploaded, resource_version: Some(revision) };
                let record = serde_json::to_value(&record).map_err(io_err)?;
                done(self.record(revision, ChangeKind::Added, &key.0, &record)?)
            }
        }
    }

    /// Why nothing new may be made at `key`: its namespace is being deleted, or is gone (checked
    /// here, in the same step as the write, so that a write admitted just before a namespace
    /// was deleted does not outlive it). Cluster-scoped keys and `default` are always open.
    fn closed_namespace(&self, key: &str) -> Result<Option<String>, StorageError> {
        let mut parts = key.splitn(3, '/');
        let (Some(_), Some(ns)) = (parts.next(), parts.next()) else { return Ok(None) };
        if ns.is_empty() {
            return Ok(None);
        }
        Ok(match self.current(&ObjectKey::new("namespaces", None, ns))? {
            None if ns == "default" => None,
            None => Some(format!("namespace {ns:?} does not exist")),
            Some(n) if n.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") => {
                Some(format!("namespace {ns:?} is being deleted (Terminating): nothing new may be made in it"))
            }
            Some(_) => None,
        })
    }

    /// The namespace's `spec.quota.moduleBytes`, if it sets one.
    fn module_quota(&self, namespace: &str) -> Result<Option<u64>, StorageError> {
        let Some(object) = self.current(&ObjectKey::new("namespaces", None, namespace))? else { return Ok(None) };
        let Some(limit) = object.pointer("/spec/quota/moduleBytes") else { return Ok(None) };
        // Validated when the Namespace was written; one that does not parse limits nothing
        // rather than stop the state machine.
        Ok(serde_json::from_value::<Memory>(limit.clone()).ok().map(|m| m.0))
    }

    /// Every object whose key starts with `prefix`, as the overlay over the file has it.
    fn with_prefix(&self, prefix: &str) -> Result<std::collections::BTreeMap<String, Vec<u8>>, StorageError> {
        let mut found = std::collections::BTreeMap::new();
        for item in self.objects.range(prefix..).map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            found.insert(k.value().to_owned(), v.value().to_vec());
        }
        for (k, v) in self.unflushed.objects_with_prefix(prefix) {
            match v {
                Some(bytes) => found.insert(k.clone(), bytes.clone()),
                None => found.remove(k),
            };
        }
        Ok(found)
    }

    /// Why the Workload `object` at `key` may not be written: it runs a module not recorded in
    /// its namespace (checked here as well as by admission, so that a module collected or
    /// deleted between the two cannot leave a Workload that names nothing).
    fn missing_module(&self, key: &str, object: &Value) -> Result<Option<String>, StorageError> {
        let Some(ns) = key.strip_prefix("workloads/").and_then(|rest| rest.split('/').next()) else { return Ok(None) };
        let Some(hex) = object.pointer("/spec/module").and_then(Value::as_str).and_then(|m| m.strip_prefix("sha256:"))
        else {
            return Ok(None);
        };
        Ok(match self.current(&ObjectKey::new(MODULES, Some(ns), hex))? {
            Some(_) => None,
            None => Some(format!(
                "spec.module: module sha256:{hex} is not uploaded to namespace {ns} (or was just deleted)"
            )),
        })
    }

    /// Which Workload of its namespace runs the module whose record is at `key`, if any: such a
    /// record is not deleted (checked here, in the same step as the delete, so that a Workload
    /// written meanwhile is seen).
    fn module_user(&self, key: &str) -> Result<Option<String>, StorageError> {
        let Some((ns, hex)) = key.strip_prefix("modules/").and_then(|rest| rest.split_once('/')) else {
            return Ok(None);
        };
        let reference = format!("sha256:{hex}");
        // Whatever may start an instance of it keeps it: a Workload, a Job, a CronJob's template.
        let users = [
            ("workloads", "workload", "/spec/module"),
            ("jobs", "job", "/spec/template/module"),
            ("cronjobs", "cronjob", "/spec/jobTemplate/template/module"),
        ];
        for (plural, kind, pointer) in users {
            let objects = self.with_prefix(&ObjectKey::prefix(plural, Some(ns)))?;
            let user = objects.into_iter().find_map(|(key, bytes)| {
                let uses = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .is_some_and(|o| o.pointer(pointer).and_then(Value::as_str) == Some(reference.as_str()));
                uses.then(|| format!("{kind} {}", key.trim_start_matches(plural).trim_start_matches('/')))
            });
            if user.is_some() {
                return Ok(user);
            }
        }
        Ok(None)
    }
}

/// The size a stored module record names (0 for one that does not parse: it charges nothing).
fn record_size(bytes: &[u8]) -> u64 {
    serde_json::from_slice::<ModuleRecord>(bytes).map_or(0, |r| r.size)
}

/// What applying a batch of entries did: a result per entry, and the last index applied (0 for
/// none).
pub struct Applied {
    /// A result per entry, in order.
    pub results: Vec<CommandResult>,
    /// The index of the last entry.
    pub last: u64,
}

/// Applies `entries` to the overlay (on the writer thread, the overlay's only writer), reading
/// what the overlay lacks from the file. It needs no commit: every applied entry is already
/// durable in the raft log, and a restart re-applies whatever a crash lost from here (the log
/// is purged only by a durable commit that also writes the overlay out).
pub(super) fn apply_to_overlay(
    db: &Database,
    unflushed: &RwLock<Unflushed>,
    entries: Vec<Entry>,
    history_revisions: u64,
) -> Result<Applied, StorageError> {
    let file = db.begin_read().map_err(io_err)?;
    let mut unflushed = unflushed.write().expect("overlay lock");
    let mut results = Vec::with_capacity(entries.len());
    let mut last = None;
    let mut tables = Tables { unflushed: &mut unflushed, objects: file.open_table(OBJECTS).map_err(io_err)?, seq: 0 };
    for entry in entries {
        last = Some(entry.log_id);
        let result = match entry.payload {
            EntryPayload::Blank => Ok(CommandResult::Ok { object: None }),
            EntryPayload::Normal(command) => {
                tables.seq = 0;
                tables.apply(entry.log_id.index, command)
            }
            EntryPayload::Membership(m) => {
                tables.unflushed.membership = Some(StoredMembership::new(Some(entry.log_id), m));
                Ok(CommandResult::Ok { object: None })
            }
        };
        match result {
            Ok(result) => results.push(result),
            Err(e) => {
                // Half an entry must never be seen or written out: drop everything unflushed
                // (readers fall back to the file's consistent state; openraft stops on the
                // error, and a restart re-applies from the log).
                tables.unflushed.clear();
                return Err(e);
            }
        }
    }
    if last.is_some() {
        unflushed.last_applied = last;
        unflushed.history_revisions = history_revisions;
        unflushed.touch();
    }
    Ok(Applied { results, last: last.map_or(0, |l| l.index) })
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;

    /// Applies `commands`, one entry each, after `applied` entries; their results.
    fn apply_all(
        db: &Database,
        unflushed: &RwLock<Unflushed>,
        applied: &mut u64,
        commands: Vec<Command>,
    ) -> Vec<CommandResult> {
        let entries = commands
            .into_iter()
            .map(|command| {
                *applied += 1;
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), *applied),
                    payload: EntryPayload::Normal(command),
                }
            })
            .collect();
        apply_to_overlay(db, unflushed, entries, 1000).unwrap().results
    }

    #[test]
    fn a_workload_needs_its_module_recorded_and_a_used_record_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::db::open(&dir.path().join("store.redb")).unwrap();
        let unflushed = RwLock::new(Unflushed::default());
        let mut applied = 0;
        let hex = "ab".repeat(32);
        let workload = |name: &str| Command::Create {
            key: ObjectKey::new("workloads", Some("default"), name),
            object: serde_json::to_vec(&serde_json::json!({
                "apiVersion": "shoal.dev/v1", "kind": "Workload",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"module": format!("sha256:{hex}")}}))
            .unwrap(),
        };
        let record = ObjectKey::new(MODULES, Some("default"), &hex);
        let put =
            Command::PutModule { namespace: "default".into(), digest: hex.clone(), size: 10, uploaded: "t".into() };
        let results = apply_all(
            &db,
            &unflushed,
            &mut applied,
            vec![
                workload("early"),
                put,
                workload("web"),
                Command::Delete { key: record.clone(), expected: None },
                Command::Delete { key: ObjectKey::new("workloads", Some("default"), "web"), expected: None },
                Command::Delete { key: record, expected: None },
            ],
        );
        assert!(
            matches!(&results[0], CommandResult::Invalid { message } if message.contains("not uploaded")),
            "{:?}",
            results[0]
        );
        assert!(matches!(results[1], CommandResult::Ok { .. }), "{:?}", results[1]);
        assert!(matches!(results[2], CommandResult::Ok { .. }), "{:?}", results[2]);
        assert!(
            matches!(&results[3], CommandResult::Invalid { message } if message.contains("used by workload default/web")),
            "{:?}",
            results[3]
        );
        assert!(matches!(results[4], CommandResult::Ok { .. }), "{:?}", results[4]);
        assert!(
            matches!(results[5], CommandResult::Ok { .. }),
            "its last user gone, the record goes: {:?}",
            results[5]
        );
    }
}

#[cfg(test)]
mod module_count {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;

    #[test]
    fn a_namespace_holds_a_bounded_number_of_modules() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::db::open(&dir.path().join("store.redb")).unwrap();
        let unflushed = RwLock::new(Unflushed::default());
        let put = |i: usize| Command::PutModule {
            namespace: "default".into(),
            digest: format!("{i:064x}"),
            size: 1,
            uploaded: "t".into(),
        };
        let entries = (0..=MAX_MODULES_PER_NAMESPACE)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1),
                payload: EntryPayload::Normal(put(i)),
            })
            .collect();
        let results = apply_to_overlay(&db, &unflushed, entries, 10_000).unwrap().results;
        assert!(results[..MAX_MODULES_PER_NAMESPACE].iter().all(|r| matches!(r, CommandResult::Ok { .. })));
        assert!(
            matches!(&results[MAX_MODULES_PER_NAMESPACE], CommandResult::Invalid { message } if message.contains("the most it may")),
            "{:?}",
            results[MAX_MODULES_PER_NAMESPACE]
        );
    }
}
