//! The daemon's main loop: serve sfcctl on a Unix socket (mode 0600) and re-check interfaces
//! every tick, one thing at a time.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::{
        fd::AsRawFd,
        unix::{fs::PermissionsExt, net::UnixListener},
    },
    path::Path,
    time::Duration,
};

use tracing::{debug, warn};

use crate::{
    agent::Agent,
    protocol::{Request, Response},
    trace,
};

/// How often interfaces are re-read when no request arrives.
const TICK: Duration = Duration::from_millis(250);
/// Longest a client may take to send its request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request accepted (a chain file of 100k classifiers is ~30 MB of YAML).
const MAX_REQUEST: u64 = 256 << 20;

pub fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir)?;
    }
    match fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Created 0600 from the start (umask), not chmod-ed after a window.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(socket);
    unsafe { libc::umask(old) };
    let listener = listener?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn readable(listener: &UnixListener, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    rc > 0 && pfd.revents & libc::POLLIN != 0
}

pub fn serve(listener: UnixListener, agent: &mut Agent) -> ! {
    let mut last_tick = std::time::Instant::now();
    loop {
        let ready = readable(&listener, TICK);
        // Also between requests: a client polling fast must not starve it.
        if last_tick.elapsed() >= TICK {
            agent.tick();
            last_tick = std::time::Instant::now();
        }
        if !ready {
            continue;
        }
        let (mut stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept");
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
        let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
        let mut line = String::new();
        let read = BufReader::new((&stream).take_limited()).read_line(&mut line);
        let response = match read {
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(Request::Trace { spec }) => {
                    match trace::start(&stream, agent.bpffs(), spec, agent.trace_names()) {
                        Ok(()) => continue,
                        Err(e) => Response::failure(e.to_string()),
                    }
                }
                Ok(request) => {
                    debug!(?request, "request");
                    agent.handle(request)
                }
                Err(e) => Response::failure(format!(
                    "bad request: {e}; is sfcctl the same version as the daemon?"
                )),
            },
            Err(e) => Response::failure(format!("reading the request: {e}")),
        };
        let mut body = serde_json::to_vec(&response).expect("response serialises");
        body.push(b'\n');
        if let Err(e) = stream.write_all(&body) {
            warn!(error = %e, "writing a response");
        }
    }
}

trait TakeLimited: Sized + std::io::Read {
    fn take_limited(self) -> std::io::Take<Self> {
        self.take(MAX_REQUEST)
    }
}

impl<R: std::io::Read> TakeLimited for R {}
