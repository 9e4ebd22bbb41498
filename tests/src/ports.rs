//! Free TCP ports on 127.0.0.1 for the processes a test starts.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, Result};

/// Ports already handed out by this process. The operating system picks a port nobody is
/// listening on, but between our probe and the child's bind a parallel test of this same
/// binary could be given that port too; remembering them removes that race (other processes
/// can still collide, which is rare and shows up as a clear "address in use" in a log).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that nothing listens on right now and that this process has not
/// handed out before.
pub fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .context("failed to bind 127.0.0.1:0 to find a free port")?;
        let port = listener
            .local_addr()
            .context("failed to read the address of a probe listener")?
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("found no free port on 127.0.0.1 in 100 attempts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
