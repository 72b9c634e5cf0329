"""Fixed-rate UDP stream for the tests: `send DST PORT COUNT RATE SPORT [BURST [SIZE]]` sends
COUNT numbered datagrams of SIZE bytes at RATE per second from source port SPORT (or, for
`FIRST-LAST`, from each port of that range in turn: one flow per port), BURST at a time back to
back; `receive PORT OUT IDLE [COUNT]` creates OUT.ready once its socket is bound, counts distinct
sequence numbers until IDLE seconds pass without a datagram (after the first), then writes the
count to OUT (and, given COUNT, on the next line the first missing sequence numbers below it).
Every loop is bounded."""
import socket
import sys
import time


def send(dst, port, count, rate, sport, burst, size):
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    first, _, last = sport.partition("-")
    sockets = []
    for p in range(int(first), int(last or first) + 1):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind(("", p))
        sockets.append(s)
    start = time.monotonic()
    payload = b"x" * max(size - 4, 0)
    for i in range(count):
        if i % burst == 0:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sockets[i % len(sockets)].sendto(i.to_bytes(4, "big") + payload, (dst, port))


def receive(port, out, idle, count=None):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    # A datagram sent before the bind is refused by the kernel: the sender waits for this file.
    open(out + ".ready", "w").close()
    seen = set()
    s.settimeout(60)  # bounded wait for the first datagram
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            data, _ = s.recvfrom(2048)
        except socket.timeout:
            break
        seen.add(int.from_bytes(data[:4], "big"))
        s.settimeout(idle)
    # Which datagrams went missing says why: the first ones (a late receiver), a run of them (a
    # stall), or scattered ones. At most 50 are listed.
    text = str(len(seen))
    if count is not None:
        text += "\n" + " ".join([str(i) for i in range(count) if i not in seen][:50])
    with open(out + ".tmp", "w") as f:
        f.write(text + "\n")
    import os
    os.rename(out + ".tmp", out)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        extra = [int(a) for a in sys.argv[7:9]]
        burst = extra[0] if extra else 1
        size = extra[1] if len(extra) > 1 else 36
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6],
             burst, size)
    else:
        receive(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), *[int(a) for a in sys.argv[5:6]])
