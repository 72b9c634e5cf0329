"""Long-lived TCP connections for the tests. `serve PORT` echoes lines back (one thread per
connection). `talk DST PORT SPORTS SECONDS INTERVAL OUT` opens one connection per source port
(comma-separated), then on each sends a line and waits for its echo every INTERVAL seconds for
SECONDS, and writes to OUT how many round trips succeeded and failed. Bounded everywhere."""
import os
import socket
import sys
import threading
import time


def serve(port):
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", port))
    srv.listen(64)

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


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        talk(sys.argv[2], int(sys.argv[3]), [int(p) for p in sys.argv[4].split(",")],
             float(sys.argv[5]), float(sys.argv[6]), sys.argv[7])
