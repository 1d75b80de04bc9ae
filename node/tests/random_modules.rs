//! The runtime fed random modules from wasm-smith, made to import WASI preview 1 and export
//! `_start` and a memory so that they load and run rather than fail to link: every one loads or
//! is refused with an error, runs to an exit or is stopped with a reason (out of memory,
//! deadline, stack, trap) under the sandbox's limits, the process never panics, and its memory
//! stays bounded. `SHOAL_RANDOM_MODULES=N` runs N (default 300; BENCHMARKS.md records 10,000).

use std::collections::BTreeMap;
use std::time::Duration;

use arbitrary::Unstructured;
use shoal_node::runtime::command::{self, Exit};
use shoal_node::runtime::host::{Output, Sandbox};
use shoal_node::runtime::limits::Limits;
use shoal_node::runtime::{Runtime, RuntimeConfig};

/// What the modules may import: WASI preview 1 functions a command uses.
const IMPORTS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
  (import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32))))"#;

/// What they must export: a command's entry point and its memory.
const EXPORTS: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// A deterministic stream of bytes for seed `seed` (xorshift).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_modules_load_or_are_refused_and_run_or_are_stopped_within_their_limits() {
    let count: u64 = std::env::var("SHOAL_RANDOM_MODULES").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let runtime = Runtime::new(&RuntimeConfig { max_instances: 16, ..Default::default() }).unwrap();
    let config = wasm_smith::Config {
        available_imports: Some(wat::parse_str(IMPORTS).unwrap()),
        exports: Some(wat::parse_str(EXPORTS).unwrap()),
        max_memories: 0,
        max_memory32_bytes: 1 << 30,
        max_tables: 2,
        max_funcs: 40,
        max_instructions: 400,
        // Proposals the node's engine does not take (they would only be refused at load).
        compact_imports_enabled: false,
        gc_enabled: false,
        exceptions_enabled: false,
        memory64_enabled: false,
        threads_enabled: false,
        wide_arithmetic_enabled: false,
        ..wasm_smith::Config::default()
    };
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut rss_after_warmup = None;
    for seed in 0..count {
        let input = bytes(seed, 4096);
        let Ok(module) = wasm_smith::Module::new(config.clone(), &mut Unstructured::new(&input)) else {
            *outcomes.entry("not generated".into()).or_default() += 1;
            continue;
        };
        let wasm = module.to_bytes();
        let program = match runtime.load(&wasm) {
            Ok(program) => program,
            Err(e) => {
                assert!(!e.to_string().is_empty(), "seed {seed}: a refusal says why");
                if seed < 5 {
                    eprintln!("seed {seed} refused: {e}");
                }
                *outcomes.entry("refused at load".into()).or_default() += 1;
                continue;
            }
        };
        let mut sandbox = Sandbox::new("random.wasm");
        sandbox.stdout = Output::Discard;
        sandbox.stderr = Output::Discard;
        sandbox.limits =
            Limits { memory: Some(16 << 20), cpu_millis: Some(500), timeout: Some(Duration::from_millis(200)) };
        let outcome = match command::run(&runtime, &program, &sandbox).await {
            Ok(Exit::Code(_)) => "exited".to_owned(),
            Ok(Exit::Stopped { reason, .. }) => format!("stopped: {reason}"),
            Err(e) => {
                assert!(!e.to_string().is_empty(), "seed {seed}: a failure says why");
                "failed to start".to_owned()
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
        if seed == count / 10 {
            rss_after_warmup = Some(rss_kib());
        }
    }
    let ran: u64 =
        outcomes.iter().filter(|(k, _)| k.as_str() == "exited" || k.starts_with("stopped")).map(|(_, n)| n).sum();
    eprintln!("{count} random modules: {outcomes:?}");
    assert!(ran >= count / 2, "most random modules run (rather than fail to link): {outcomes:?}");
    if let Some(before) = rss_after_warmup {
        let grown = rss_kib().saturating_sub(before);
        assert!(grown < 256 << 10, "the process grew {grown} KiB over {count} modules: {outcomes:?}");
    }
}
