"""Wait until HOST:PORT accepts and, optionally, greets with EXPECT: waitport.py HOST PORT TIMEOUT [EXPECT]."""
import socket
import sys
import time

host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
expect = sys.argv[4].encode() if len(sys.argv) > 4 else None
start = time.monotonic()
while True:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            if expect is None or s.recv(200).startswith(expect):
                sys.exit(0)
    except OSError:
        pass
    if time.monotonic() - start > timeout:
        print(f"timeout waiting for {host}:{port}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.02)
