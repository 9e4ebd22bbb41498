//! Fault injection for the crash tests: the process kills itself at a chosen point (after a
//! consumer's commit but before its ack; after a publish ack but before the outbox row is
//! deleted), so that tests can prove a crash exactly there loses and doubles nothing.

/// Kills this process with a real SIGKILL, sent from outside the process as an operator or
/// the OOM killer would; nothing after this point runs.
pub fn kill_this_process(at: &str) -> ! {
    tracing::warn!(at, "fault injection: killing this process");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status();
    std::process::abort();
}
