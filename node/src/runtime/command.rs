//! Running command guests: `wasi:cli/run` components and preview-1 modules (`_start`), to
//! completion, in a fresh store with the sandbox's limits.

use std::fmt;

use wasmtime::Store;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::Command;

use super::host::{Host, P1Host, Sandbox};
use super::limits::{self, DeadlineExceeded, MemoryGuard, MemoryLimitExceeded, SharedMemoryExceeded};
use super::{Program, Runtime, RuntimeError};

/// Why a guest stopped other than by exiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// It tried to grow its memory past its limit.
    OutOfMemory,
    /// It ran past its deadline.
    Timeout,
    /// It overflowed its stack.
    StackOverflow,
    /// Any other trap (unreachable, out-of-bounds access, ...).
    Trap,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::OutOfMemory => "OutOfMemory",
            StopReason::Timeout => "Timeout",
            StopReason::StackOverflow => "StackOverflow",
            StopReason::Trap => "Trap",
        })
    }
}

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It exited (or returned) with this code.
    Code(i32),
    /// It was stopped.
    Stopped {
        /// Why.
        reason: StopReason,
        /// The trap or error message.
        message: String,
    },
}

impl Exit {
    /// The process exit code that stands for this ending (128 + a small number for stops, as a
    /// shell reports a signal).
    pub fn code(&self) -> i32 {
        match self {
            Exit::Code(c) => *c,
            Exit::Stopped { reason: StopReason::Trap, .. } => 134,
            Exit::Stopped { reason: StopReason::OutOfMemory, .. } => 137,
            Exit::Stopped { reason: StopReason::Timeout, .. } => 124,
            Exit::Stopped { reason: StopReason::StackOverflow, .. } => 139,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Stopped { reason, message } => write!(f, "stopped ({reason}): {message}"),
        }
    }
}

/// Turns the error a guest call returned into how it ended.
pub fn classify(error: &wasmtime::Error) -> Exit {
    if let Some(I32Exit(code)) = error.downcast_ref::<I32Exit>() {
        return Exit::Code(*code);
    }
    // The guest's backtrace is in the error's chain; the root cause is what a person needs
    // first (the trap, the limit, the deadline).
    let message = error.root_cause().to_string();
    let reason = if error.downcast_ref::<MemoryLimitExceeded>().is_some()
        || error.downcast_ref::<SharedMemoryExceeded>().is_some()
    {
        StopReason::OutOfMemory
    } else if error.downcast_ref::<DeadlineExceeded>().is_some() {
        StopReason::Timeout
    } else {
        match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::StackOverflow) => StopReason::StackOverflow,
            Some(wasmtime::Trap::Interrupt) => StopReason::Timeout,
            _ => StopReason::Trap,
        }
    };
    Exit::Stopped { reason, message }
}

/// Runs a command guest to completion.
pub async fn run(runtime: &Runtime, program: &Program, sandbox: &Sandbox) -> Result<Exit, RuntimeError> {
    match sandbox.turns.clone() {
        Some(turns) => super::fair::Fair::new(run_now(runtime, program, sandbox), turns).await,
        None => run_now(runtime, program, sandbox).await,
    }
}

/// Runs a command guest to completion, whenever polled.
async fn run_now(runtime: &Runtime, program: &Program, sandbox: &Sandbox) -> Result<Exit, RuntimeError> {
    let io = |e: std::io::Error| RuntimeError::Instantiate(e.to_string());
    match program {
        Program::Component(component) => {
            let mut store = Store::new(component.engine(), Host::new(sandbox).map_err(io)?);
            store.limiter(|h| &mut h.guard);
            limits::arm(&mut store, &sandbox.limits);
            let linker = &runtime.linkers_for(component.engine()).component;
            let command = match Command::instantiate_async(&mut store, component, linker).await {
                Ok(c) => c,
                Err(e) => return instantiation_failure(e),
            };
            Ok(match command.wasi_cli_run().call_run(&mut store).await {
                Ok(Ok(())) => Exit::Code(0),
                Ok(Err(())) => Exit::Code(1),
                Err(e) => classify(&e),
            })
        }
        Program::Module(module) => {
            let host = P1Host {
                wasi: sandbox.wasi().map_err(io)?.build_p1(),
                guard: MemoryGuard::new(&sandbox.limits, sandbox.memory_pool.clone()),
            };
            let mut store = Store::new(module.engine(), host);
            store.limiter(|h| &mut h.guard);
            limits::arm(&mut store, &sandbox.limits);
            let instance = match runtime.linkers_for(module.engine()).module.instantiate_async(&mut store, module).await
            {
                Ok(i) => i,
                Err(e) => return instantiation_failure(e),
            };
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(|e| RuntimeError::Shape(format!("not a command module (no _start): {e:#}")))?;
            Ok(match start.call_async(&mut store, ()).await {
                Ok(()) => Exit::Code(0),
                Err(e) => classify(&e),
            })
        }
    }
}

/// A trap during instantiation (e.g. a start function that runs out of memory) is the guest's
/// ending; anything else (a missing import, a full pool) is the host's error.
fn instantiation_failure(e: wasmtime::Error) -> Result<Exit, RuntimeError> {
    match classify(&e) {
        Exit::Stopped { reason: StopReason::Trap, .. } if e.downcast_ref::<wasmtime::Trap>().is_none() => {
            Err(RuntimeError::Instantiate(format!("{e:#}")))
        }
        exit => Ok(exit),
    }
}
