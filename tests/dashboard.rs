//! The dashboard in a real headless Chromium (Debian's `chromium`, driven over WebDriver by
//! Debian's `chromedriver`): logging in with a token, what each page shows, a live update
//! without a reload, a log followed live, and a tenant's token seeing its own namespace only.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::workloads::{apply, wait_running, workload_yaml};
use common::{ControlProcess, NodeProcess, ok_stdout, wait_for};
use fantoccini::{Client, ClientBuilder, Locator};

/// Markup a tenant's guest writes to its log: shown as text, it runs nothing.
const MARKUP: &str = "<img src=x onerror=window.pwned=1><b>bold</b>";

/// A chromedriver and one browser session of it.
struct Browser {
    driver: Child,
    client: Client,
}

impl Browser {
    async fn start(dir: &std::path::Path) -> Browser {
        let addr = common::fixed_addr();
        let port = addr.rsplit_once(':').unwrap().1.to_owned();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("chromedriver.log")).unwrap()))
            .spawn()
            .expect("start chromedriver");
        let http = common::workloads::http();
        let status = format!("http://{addr}/status");
        wait_for(Duration::from_secs(20), "chromedriver to be ready", || async {
            let status: serde_json::Value = http.get(&status).send().await.ok()?.json().await.ok()?;
            (status["value"]["ready"] == true).then_some(())
        })
        .await;
        let profile = dir.join("profile");
        // The API server's certificate is signed by the cluster's own CA, which this fresh
        // profile does not know: the session accepts it (the test is about the page).
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://{addr}"))
            .await
            .expect("a chromium session");
        Browser { driver, client }
    }

    /// Logs in at `url` with `token`.
    async fn log_in(&self, url: &str, token: &str) {
        self.client.goto(url).await.unwrap();
        let field = self.client.wait().for_element(Locator::Css("#token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        self.client.find(Locator::Css("#signin")).await.unwrap().click().await.unwrap();
    }

    /// Whether the element `css` is shown.
    async fn shown(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.unwrap().is_displayed().await.unwrap()
    }

    /// The text the page shows (in `#page`).
    async fn page_text(&self) -> String {
        let script = "return document.querySelector('#page').innerText";
        self.client.execute(script, vec![]).await.unwrap().as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the page's text passes `check`, failing with what it showed.
    async fn wait_until(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.page_text().await;
            if check(&text) {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "the page never showed {what}; it shows:\n{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The rows of table `id` on the page, each as its cells' text.
    async fn rows(&self, id: &str) -> Vec<Vec<String>> {
        let script = format!(
            "return [...document.querySelectorAll('#{id} tbody tr')].map(r => [...r.cells].map(c => c.innerText))"
        );
        let value = self.client.execute(&script, vec![]).await.unwrap();
        serde_json::from_value(value).unwrap_or_default()
    }

    /// Opens the log of instance `name` of `default` by its link on the Instances page.
    async fn follow_log_link(&self, name: &str) {
        let href = format!("#/logs/default/{name}");
        let script = format!("return document.querySelector(\"tr[data-key='default/{name}'] a\").getAttribute('href')");
        assert_eq!(self.client.execute(&script, vec![]).await.unwrap(), serde_json::json!(href));
        // The table is drawn anew on every change, so the link is followed as a click would.
        self.client.execute(&format!("location.hash = '{href}'"), vec![]).await.unwrap();
    }

    async fn open(&self, nav: &str) {
        self.client.find(Locator::LinkText(nav)).await.unwrap().click().await.unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Waits until the Workloads page shows hello's rollout complete (`done`) or in progress.
async fn hello_rollout(browser: &Browser, done: bool) -> Vec<String> {
    wait_for(Duration::from_secs(30), &format!("hello's rollout shown complete: {done}"), || async {
        let row = browser.rows("workloads").await.into_iter().find(|r| r[1] == "hello")?;
        (if done { row[5] == "complete" } else { row[5].starts_with("in progress") }).then_some(row)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_each_page_live_and_a_tenant_only_its_namespace() {
    if !common::have("chromium", "chromium") || !common::have("chromedriver", "chromium-driver") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(&dir.path().join("control"), &[]);
    let _node = NodeProcess::start(&control, "n1", &[]);
    let client = control.client();
    let alpha =
        "apiVersion: shoal.dev/v1\nkind: Namespace\nmetadata:\n  name: alpha\nspec:\n  quota:\n    instances: 1\n";
    let shop =
        workload_yaml("shop", "$HELLO", "  replicas: 2\n  resources:\n    memory: 32Mi\n").replace("default", "alpha");
    let hello = workload_yaml("hello", "$HELLO", "  replicas: 1\n  resources:\n    memory: 32Mi\n");
    let worker = workload_yaml(
        "ticker",
        "$WORKER",
        "  type: command\n  env:\n  - name: INTERVAL_MS\n    value: \"200\"\n  resources:\n    memory: 32Mi\n",
    );
    // It prints its env: a value of markup, which the log page must show as text.
    let echo = workload_yaml(
        "echo",
        "$MISBEHAVE",
        &format!(
            "  type: command\n  restartPolicy: Never\n  args: [env]\n  env:\n  - name: MARKUP\n    value: \"{MARKUP}\"\n  resources:\n    memory: 32Mi\n"
        ),
    );
    let manifest = format!("{alpha}---\n{shop}---\n{hello}---\n{worker}---\n{echo}");
    tokio::task::block_in_place(|| apply(&control, "apps", &manifest));
    wait_running(&client, "hello", 1, Some("n1"), Duration::from_secs(30)).await;
    let tenant = tokio::task::block_in_place(|| control.cli(&["token", "create", "alpha-ops", "--namespace", "alpha"]));
    let tenant = ok_stdout(&tenant).trim().to_owned();
    let admin = control.client_config().token;
    let url = format!("{}/ui/", control.api_url);

    let browser = Browser::start(dir.path()).await;
    // A wrong token is told so, and shows nothing.
    browser.log_in(&url, "not-a-token").await;
    let error = browser.client.wait().for_element(Locator::Css("#login-error")).await.unwrap();
    wait_for(Duration::from_secs(10), "the login error", || async {
        error.text().await.ok().filter(|t| t.contains("not valid"))
    })
    .await;

    assert!(!browser.shown("#nav").await, "no navigation before a token is taken");

    // The admin: every namespace's workloads, with their rollouts.
    browser.log_in(&url, &admin).await;
    browser.wait_until("both namespaces' workloads", |t| t.contains("hello") && t.contains("shop")).await;
    assert!(!browser.shown("#login").await && browser.shown("#nav").await, "logged in, the form is gone");
    let rows = browser.rows("workloads").await;
    let hello_row = rows.iter().find(|r| r[1] == "hello").expect("a row for hello");
    assert_eq!(hello_row[0], "default");
    let hello = hello_rollout(&browser, true).await;
    assert_eq!(hello[2], "1/1", "{hello:?}");

    // Instances, with phase and node; scaling shows up without a reload.
    browser.open("Instances").await;
    browser.wait_until("a running hello on n1", |t| t.lines().any(|l| l.contains("Running") && l.contains("n1"))).await;
    tokio::task::block_in_place(|| ok_stdout(&control.cli(&["scale", "workload", "hello", "--replicas", "3"])));
    let live = wait_for(Duration::from_secs(30), "three hello instances on the page", || async {
        let rows = browser.rows("instances").await;
        let hello: Vec<_> = rows.into_iter().filter(|r| r[2] == "hello").collect();
        (hello.len() == 3 && hello.iter().all(|r| r[3] == "Running" && r[4] == "n1")).then_some(hello)
    })
    .await;
    assert_eq!(live.len(), 3);

    // A rollout that cannot finish (the new module crashes) shows as in progress; undone, it
    // completes.
    browser.open("Workloads").await;
    let broken = workload_yaml("hello", "$CRASH", "  replicas: 3\n  resources:\n    memory: 32Mi\n");
    tokio::task::block_in_place(|| apply(&control, "broken", &broken));
    let stuck = hello_rollout(&browser, false).await;
    assert_eq!(stuck[2], "3/3", "the old instances keep serving: {stuck:?}");
    tokio::task::block_in_place(|| ok_stdout(&control.cli(&["rollout", "undo", "workload/hello"])));
    hello_rollout(&browser, true).await;

    // Events: alpha's quota stops its second replica.
    browser.open("Events").await;
    browser.wait_until("alpha's FailedCreate", |t| t.contains("FailedCreate") && t.contains("quota exceeded")).await;

    // Nodes, with capacity and what runs there.
    browser.open("Nodes").await;
    // hello x3, shop and ticker run on n1 (echo has finished); the count follows the
    // instances' watch, so it may show a moment after the row.
    let nodes = wait_for(Duration::from_secs(10), "node n1 ready on the page, running 5 instances", || async {
        let rows = browser.rows("nodes").await;
        rows.into_iter().find(|r| r[0] == "n1" && r[1] == "True" && r[3] == "5")
    })
    .await;
    let Ok(shoal_api::AnyObject::Node(n1)) = client.get(shoal_api::Kind::Node, None, "n1").await else {
        panic!("node n1 is stored")
    };
    let capacity = n1.status.unwrap().capacity;
    let shown = format!("{} instances, {} memory, {} cpu", capacity.instances, capacity.memory, capacity.cpu);
    assert_eq!(nodes[4], shown, "the capacity n1 reported");
    assert!(capacity.instances > 0 && capacity.memory.0 > 0, "{shown}");

    // A log followed live: the ticker writes a line every 200 ms.
    browser.open("Instances").await;
    let ticker = wait_for(Duration::from_secs(20), "the ticker's row", || async {
        browser.rows("instances").await.into_iter().find(|r| r[2] == "ticker" && r[3] == "Running")
    })
    .await;
    browser.follow_log_link(&ticker[1]).await;
    let first = browser.wait_until("ticks", |t| t.contains("tick ")).await;
    let ticks = |t: &str| t.lines().filter(|l| l.starts_with("tick ")).count();
    let before = ticks(&first);
    browser.wait_until("more ticks, live", |t| ticks(t) >= before + 3).await;

    // A tenant's markup in a log is text.
    browser.open("Instances").await;
    let echo = wait_for(Duration::from_secs(20), "the echo instance's row", || async {
        browser.rows("instances").await.into_iter().find(|r| r[2] == "echo" && r[3] == "Succeeded")
    })
    .await;
    browser.follow_log_link(&echo[1]).await;
    browser.wait_until("the markup, as text", |t| t.contains(&format!("MARKUP={MARKUP}"))).await;
    let script = "return [window.pwned === undefined, document.querySelectorAll('#log img, #log b').length]";
    let ran = browser.client.execute(script, vec![]).await.unwrap();
    assert_eq!(ran, serde_json::json!([true, 0]), "the log's markup made elements or ran");

    // Logging out forgets the token.
    browser.client.find(Locator::Css("#logout")).await.unwrap().click().await.unwrap();
    browser.client.wait().for_element(Locator::Css("#token")).await.unwrap();
    let stored = browser.client.execute("return sessionStorage.getItem('shoal-token')", vec![]).await.unwrap();
    assert_eq!(stored, serde_json::Value::Null, "the token is gone from the tab");

    // The tenant: alpha only, and no nodes page.
    browser.log_in(&url, &tenant).await;
    browser.wait_until("alpha's workload", |t| t.contains("shop")).await;
    let rows = browser.rows("workloads").await;
    assert!(rows.iter().all(|r| r[0] == "alpha"), "a tenant sees only its namespace: {rows:?}");
    browser.open("Instances").await;
    browser.wait_until("alpha's instance", |t| t.contains("shop")).await;
    // The page's text may show the name before the table has its rows.
    let rows = wait_for(Duration::from_secs(30), "rows in the instances table", || async {
        let rows = browser.rows("instances").await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert!(rows.iter().all(|r| r[0] == "alpha"), "{rows:?}");
    browser.open("Events").await;
    let events = browser.wait_until("alpha's quota event", |t| t.contains("FailedCreate")).await;
    assert!(!events.contains("default"), "a tenant's events are its namespace's: {events}");
    browser.open("Nodes").await;
    browser.wait_until("that nodes are for the admin", |t| t.contains("for the admin token")).await;

    // Its token revoked, the page goes back to the login (its watches end; the next list is a 401).
    browser.open("Workloads").await;
    browser.wait_until("alpha's workload again", |t| t.contains("shop")).await;
    tokio::task::block_in_place(|| ok_stdout(&control.cli(&["token", "delete", "alpha-ops"])));
    wait_for(Duration::from_secs(20), "the login form after the token was revoked", || async {
        browser.shown("#login").await.then_some(())
    })
    .await;
    let said = browser.client.find(Locator::Css("#login-error")).await.unwrap().text().await.unwrap();
    assert!(said.contains("no longer valid"), "{said}");
    browser.client.clone().close().await.unwrap();
}
