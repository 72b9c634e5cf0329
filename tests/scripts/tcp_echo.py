"""TCP connections for the tests. `serve PORT` echoes lines back (one thread per connection).
`talk DST PORT SPORTS SECONDS INTERVAL OUT` opens one connection per source port
(comma-separated), then on each sends a line and waits for its echo every INTERVAL seconds for
SECONDS, and writes to OUT how many round trips succeeded and failed. `sink PORT` takes one
connection, counts its bytes until the sender closes, and answers with the count; `upload DST
PORT BYTES` sends BYTES to such a sink and prints its answer. Bounded everywhere."""
import os
import socket
import sys
import threading
import time


def listen(port, backlog):
    """A TCP socket on PORT, IPv4 and IPv6."""
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", port))
    srv.listen(backlog)
    return srv


def serve(port):
    srv = listen(port, 64)

    def echo(conn):
        with conn:
            conn.settimeout(120)
            try:
                while True:
                    data = conn.recv(4096)
                    if not data:
                        return
                    conn.sendall(data)
            except OSError:
                return

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def talk(dst, port, sports, seconds, interval, out):
    conns = []
    for sport in sports:
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.bind(("", sport))
        c.settimeout(5)
        c.connect((dst, port))
        conns.append(c)
    ok = failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for c in conns:
            try:
                c.sendall(b"ping\n")
                got = b""
                while len(got) < 5:
                    chunk = c.recv(5 - len(got))
                    if not chunk:
                        raise OSError("closed")
                    got += chunk
                ok += 1
            except OSError:
                failed += 1
        time.sleep(interval)
    for c in conns:
        c.close()
    with open(out + ".tmp", "w") as f:
        f.write(f"{ok} {failed}")
    os.rename(out + ".tmp", out)


def sink(port):
    srv = listen(port, 1)
    srv.settimeout(60)
    conn, _ = srv.accept()
    conn.settimeout(30)
    count = 0
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            count += len(data)
        conn.sendall(str(count).encode())


def upload(dst, port, size):
    c = socket.create_connection((dst, port), timeout=30)
    chunk = bytes(65536)
    sent = 0
    while sent < size:
        n = min(len(chunk), size - sent)
        c.sendall(chunk[:n])
        sent += n
    c.shutdown(socket.SHUT_WR)
    print(c.recv(64).decode())


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "sink":
        sink(int(sys.argv[2]))
    elif sys.argv[1] == "upload":
        upload(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        talk(sys.argv[2], int(sys.argv[3]), [int(p) for p in sys.argv[4].split(",")],
             float(sys.argv[5]), float(sys.argv[6]), sys.argv[7])
