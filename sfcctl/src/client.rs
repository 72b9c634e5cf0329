//! Talking to sfc-daemon: one versioned request line, one versioned response line.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use sfc_api::protocol::{self, Request, Response};

/// Longest wait for an answer (an apply of 100 000 classifiers takes a few seconds).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Connects and sends `request`; the answer is the caller's to read.
pub fn send(socket: &Path, request: &Request) -> Result<BufReader<UnixStream>, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach sfc-daemon at {}: {e}; is it running? (pass --socket if it listens elsewhere)",
            socket.display()
        )
    })?;
    stream
        .write_all(&protocol::encode(request))
        .map_err(|e| format!("sending to sfc-daemon: {e}"))?;
    Ok(BufReader::new(stream))
}

/// Reads the daemon's response line.
pub fn answer(reader: &mut BufReader<UnixStream>) -> Result<Response, String> {
    let _ = reader.get_ref().set_read_timeout(Some(ANSWER_TIMEOUT));
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("reading from sfc-daemon: {e}"))?;
    if line.is_empty() {
        return Err("sfc-daemon closed the connection without answering".into());
    }
    protocol::decode(&line, "sfc-daemon", "sfcctl").map_err(|e| e.to_string())
}

/// One request, one response.
pub fn call(socket: &Path, request: &Request) -> Result<Response, String> {
    answer(&mut send(socket, request)?)
}
