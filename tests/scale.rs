//! The API at scale: lists read a page at a time (`limit` and `continue`), returning every
//! object exactly once while others are being created, refusing tokens of other lists and
//! pages whose beginning has been compacted away; `shoal get` pages through.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{ControlProcess, ok_stdout};
use shoal_api::client::Page;
use shoal_api::{AnyObject, Client, Kind};

fn config(name: &str) -> AnyObject {
    let json = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Config",
        "metadata": {"name": name, "namespace": "default"}, "spec": {"data": {"k": "v"}}});
    AnyObject::from_json(Kind::Config, &json).unwrap()
}

/// Creates `names`, 16 at a time.
async fn create_all(client: &Client, names: impl Iterator<Item = String>) {
    let names: Vec<String> = names.collect();
    for chunk in names.chunks(16) {
        let objects: Vec<AnyObject> = chunk.iter().map(|n| config(n)).collect();
        for result in futures::future::join_all(objects.iter().map(|o| client.create(o))).await {
            result.unwrap();
        }
    }
}

/// Every page of the Configs of `default`, `limit` at a time: the names in order, and the
/// revision each page says.
async fn pages(client: &Client, limit: usize) -> (Vec<String>, Vec<u64>) {
    let (mut names, mut revisions, mut from) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let page = Page { limit, from: from.as_deref() };
        let list = client.list_page(Kind::Config, Some("default"), None, Some(page)).await.unwrap();
        assert!(list.items.len() <= limit, "a page of {} past its limit {limit}", list.items.len());
        names.extend(list.items.iter().map(|o| o.meta().name.to_string()));
        revisions.push(list.resource_version);
        match list.continue_ {
            Some(next) => from = Some(next),
            None => return (names, revisions),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_lists_return_every_object_once_while_more_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &["--history-revisions", "200"]);
    let client = control.client();
    let before: BTreeSet<String> = (0..600).map(|i| format!("before-{i:04}")).collect();
    create_all(&client, before.iter().cloned()).await;

    // Pages read while another client keeps creating.
    let creating = Arc::new(AtomicBool::new(true));
    let writer = {
        let (client, creating) = (control.client(), creating.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while creating.load(Ordering::Relaxed) {
                create_all(&client, (n..n + 16).map(|i| format!("during-{i:05}"))).await;
                n += 16;
            }
            n
        })
    };
    let (names, revisions) = pages(&client, 37).await;
    creating.store(false, Ordering::Relaxed);
    let created_during = writer.await.unwrap();
    assert!(created_during > 0 && revisions.len() > 16, "the listing overlapped the writes");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for name in &names {
        *seen.entry(name).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "objects listed more than once: {twice:?}");
    let missing: Vec<_> = before.iter().filter(|n| !seen.contains_key(n.as_str())).collect();
    assert!(missing.is_empty(), "objects that existed throughout but were not listed: {missing:?}");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "pages in key order");
    assert!(revisions.iter().all(|r| *r == revisions[0]), "every page says the first page's revision: {revisions:?}");

    // Read a page of 500 at a time once the writes stopped: every object.
    let total = before.len() + created_during;
    let all = client.list_paged(Kind::Config, Some("default"), None, 500).await.unwrap();
    assert_eq!(all.items.len(), total, "list_paged reads the whole list");

    // The CLI pages through (and prints each once).
    let listed = tokio::task::block_in_place(|| {
        ok_stdout(&control.cli(&["get", "configs", "--chunk-size", "50", "-o", "name"]))
    });
    let listed: Vec<&str> = listed.lines().collect();
    assert_eq!(listed.len(), total, "shoal get --chunk-size 50 lists every config once");
    assert_eq!(listed.iter().collect::<BTreeSet<_>>().len(), total);

    // Refused: another list's token, a page too long, paging a watch.
    let http = control.raw_http();
    let token = Client::new(&control.client_config())
        .unwrap()
        .list_page(Kind::Config, Some("default"), None, Some(Page { limit: 5, from: None }))
        .await
        .unwrap()
        .continue_
        .expect("more than five configs");
    let auth = format!("Bearer {}", control.client_config().token);
    let status = |path: String| http.get(format!("{}{path}", control.api_url)).header("authorization", &auth).send();
    let encoded: String = token.bytes().map(|b| format!("%{b:02X}")).collect();
    let other = status(format!("/api/v1/namespaces/other/configs?limit=5&continue={encoded}")).await.unwrap();
    assert_eq!(other.status(), 400, "{}", other.text().await.unwrap());
    let long = status("/api/v1/namespaces/default/configs?limit=10001".into()).await.unwrap();
    assert_eq!(long.status(), 400);
    let watch = status("/api/v1/namespaces/default/configs?watch=true&limit=5".into()).await.unwrap();
    assert_eq!(watch.status(), 400);

    // A list continued after its first page's revision is compacted away is a 410: the client
    // lists again from the start.
    let continued = format!("/api/v1/namespaces/default/configs?limit=5&continue={encoded}");
    let mut batch = 0;
    let gone = loop {
        let response = status(continued.clone()).await.unwrap();
        if response.status() == 410 {
            break response.text().await.unwrap();
        }
        assert_eq!(response.status(), 200, "before it is compacted, the token reads on");
        assert!(batch < 20, "200 revisions of history kept, and still no 410 after {batch} batches of 32 writes");
        // One at a time: each is a raft entry of its own (a revision), where writes made at once
        // share one.
        for i in 0..32 {
            client.create(&config(&format!("later-{batch:03}-{i:02}"))).await.unwrap();
        }
        batch += 1;
    };
    assert!(gone.contains("list again"), "{gone}");
}
