//! `healthcheck [PATH]`: the container health probe. It sends `GET PATH` (default `/healthz`)
//! to the service in the same container and exits 0 on a 2xx answer, 1 otherwise.
//!
//! The runtime image is distroless (no shell, no curl), so Docker's `HEALTHCHECK` needs a
//! binary of its own. This one is std only, compiled with plain `rustc` in the image build,
//! and finds the port the same way the service does: from `HTTP_ADDR` (`0.0.0.0:<port>` in a
//! container, probed on loopback). Kubernetes does not use it: its probes speak HTTP
//! themselves.

use std::env;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Connect, write and read each get this long; Docker's own `--timeout` bounds the whole run.
const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let path = env::args().nth(1).unwrap_or_else(|| "/healthz".to_owned());
    match probe(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("healthcheck: {message}");
            ExitCode::FAILURE
        }
    }
}

fn probe(path: &str) -> Result<(), String> {
    let listen = env::var("HTTP_ADDR").map_err(|_| "HTTP_ADDR is not set".to_owned())?;
    let listen: SocketAddr = listen
        .parse()
        .map_err(|error| format!("HTTP_ADDR {listen:?} is not an address: {error}"))?;
    let target = reachable(listen);
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)
        .map_err(|error| format!("cannot connect to {target}: {error}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|error| format!("cannot set socket timeouts: {error}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|error| format!("cannot send the request to {target}: {error}"))?;
    // The status line is all we need: "HTTP/1.1 200 OK".
    let mut head = Vec::new();
    let mut buffer = [0_u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let read = stream
            .read(&mut buffer)
            .map_err(|error| format!("cannot read the answer from {target}: {error}"))?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1).map(str::parse::<u16>) {
        Some(Ok(status)) if (200..300).contains(&status) => Ok(()),
        _ => Err(format!("GET {path} on {target} answered {status_line:?}")),
    }
}

/// A service listening on every interface is reached on loopback of the same family.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}
