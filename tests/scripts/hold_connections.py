"""Holds idle connections open, for the tests: `tcp HOST PORT COUNT SECONDS` opens COUNT TCP
connections that send nothing, keeps them for SECONDS, then closes them and exits."""
import socket
import sys
import time

if __name__ == "__main__":
    _, kind, host, port, count, seconds = sys.argv
    assert kind == "tcp"
    held = []
    for _ in range(int(count)):
        held.append(socket.create_connection((host, int(port)), timeout=5))
    time.sleep(float(seconds))
