//! The Unix socket sfcctl talks to (mode 0600). Every connection is served by its own task:
//! one versioned request line, read whole within a deadline and a size limit, then one
//! response line, written within a deadline. A client that sends half a request, trickles it,
//! or never reads its answer costs its own task and nothing else; requests that change state
//! go to the agent's queue, `get` is answered from the published state, and traces stream
//! from their own task.

use std::{
    fs, io,
    os::unix::{fs::PermissionsExt, net::UnixStream as StdUnixStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use sfc_api::protocol::{self, Request, Response, MAX_REQUEST_BYTES};
use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
    time::timeout,
};
use tracing::{debug, warn};

use super::across;
use crate::{
    agent::{get, run::AgentHandle, Published},
    cluster::ask,
    observe::trace::{self, TraceSlot},
};

/// Longest a client may take to send its whole request.
const READ_DEADLINE: Duration = Duration::from_secs(30);
/// Longest a client may take to read its whole answer.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the listen backlog. Idle ones end at the read
/// deadline, so this bounds memory without letting a crowd of idle clients lock others out
/// for longer than that.
const MAX_CONNECTIONS: usize = 1024;

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("creating {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error(
        "another sfc-daemon is serving {path}; one agent per node: stop it first, or give this one another --socket"
    )]
    InUse { path: PathBuf },
}

/// Refuses a socket another daemon answers on.
pub fn refuse_if_served(socket: &Path) -> Result<(), SocketError> {
    match StdUnixStream::connect(socket) {
        Ok(_) => Err(SocketError::InUse {
            path: socket.to_path_buf(),
        }),
        Err(_) => Ok(()),
    }
}

/// Creates the socket, mode 0600 from the start. A socket file nobody serves (left by a
/// crash) is replaced; one that answers belongs to a running daemon and is left alone.
pub fn bind(socket: &Path) -> Result<UnixListener, SocketError> {
    let create = |source| SocketError::Create {
        path: socket.to_path_buf(),
        source,
    };
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir).map_err(create)?;
    }
    refuse_if_served(socket)?;
    match fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(create(e)),
    }
    let old = unsafe { libc::umask(0o177) };
    let listener = std::os::unix::net::UnixListener::bind(socket);
    unsafe { libc::umask(old) };
    let listener = listener.map_err(create)?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600)).map_err(create)?;
    listener.set_nonblocking(true).map_err(create)?;
    UnixListener::from_std(listener).map_err(create)
}

/// What every connection's task needs.
#[derive(Clone)]
pub struct Context {
    pub agent: AgentHandle,
    pub published: Published,
    pub bpffs: PathBuf,
    pub traces: Arc<TraceSlot>,
    /// In a cluster: how the other nodes' counters are asked for.
    pub cluster: Option<ask::Asker>,
}

pub async fn serve(listener: UnixListener, context: Context) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                warn!(error = %e, "accepting a client");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let context = context.clone();
        tokio::spawn(async move {
            connection(stream, context).await;
            drop(permit);
        });
    }
}

async fn connection(stream: UnixStream, context: Context) {
    let (mut read, mut write) = stream.into_split();
    let request = match timeout(READ_DEADLINE, read_request(&mut read)).await {
        Ok(Ok(request)) => request,
        Ok(Err(message)) => return answer(&mut write, &Response::failure(message)).await,
        Err(_) => {
            let message = format!(
                "the request did not arrive within {} s; sfcctl sends it at once",
                READ_DEADLINE.as_secs()
            );
            return answer(&mut write, &Response::failure(message)).await;
        }
    };
    let response = match request {
        Request::Trace {
            spec,
            lease_seconds,
        } => {
            let Some(names) = context.agent.trace_names().await else {
                return answer(&mut write, &Response::failure("the agent has stopped")).await;
            };
            let mut session = trace::Session {
                bpffs: &context.bpffs,
                spec,
                lease_seconds,
                names,
                slot: &context.traces,
                node: None,
                remote: None,
                hello: "tracing".into(),
            };
            let Some(asker) = &context.cluster else {
                let sink = trace::ClientSink::new(write, Duration::ZERO);
                return session.run(sink, trace::hung_up(read)).await;
            };
            // In a cluster: every other node traces too, and sends its records here.
            let others = across::trace_others(asker, &session.spec, lease_seconds).await;
            session.node = Some(asker.node.clone());
            session.hello = others.hello(&asker.node);
            session.remote = Some(others.records);
            let sink = trace::ClientSink::new(write, across::TRACE_WINDOW);
            session.run(sink, trace::hung_up(read)).await;
            // Ends the other nodes' traces: their questions' lease goes.
            drop(others.guard);
            return;
        }
        Request::TraceStop => context.traces.stop(),
        Request::Stats { chain, node } => match (&context.cluster, node) {
            (Some(asker), node) => across::stats(asker, &context.agent, chain, node).await,
            (None, None) => {
                context
                    .agent
                    .call(Request::Stats { chain, node: None })
                    .await
            }
            (None, Some(_)) => Response::failure(
                "this node is not in a cluster (sfc-daemon runs without --etcd); leave out --node",
            ),
        },
        Request::Describe { kind, name } if context.cluster.is_some() => {
            let state = context
                .published
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let asker = context.cluster.as_ref().expect("in a cluster");
            across::describe(asker, &context.agent, &state, kind, name).await
        }
        Request::Get { kind, name } => {
            let state = context
                .published
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            get(&state, kind, name)
        }
        request => {
            debug!(?request, "request");
            context.agent.call(request).await
        }
    };
    answer(&mut write, &response).await;
}

/// One line of at most `MAX_REQUEST_BYTES`, decoded.
async fn read_request(read: &mut (impl AsyncRead + Unpin)) -> Result<Request, String> {
    let mut line = Vec::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES + 1))
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    if line.len() as u64 > MAX_REQUEST_BYTES {
        return Err(format!(
            "the request is larger than {} MiB; split the file",
            MAX_REQUEST_BYTES >> 20
        ));
    }
    protocol::decode(&line, "sfcctl", "sfc-daemon").map_err(|e| e.to_string())
}

async fn answer(write: &mut (impl tokio::io::AsyncWrite + Unpin), response: &Response) {
    let body = protocol::encode(response);
    match timeout(WRITE_DEADLINE, write.write_all(&body)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "writing a response"),
        Err(_) => warn!(
            bytes = body.len(),
            "a client did not read its answer within the deadline; dropped it"
        ),
    }
}
