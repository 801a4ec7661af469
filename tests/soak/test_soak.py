"""The short `make soak` in every test run: pollers killed, servers gone mid-poll and a failing SMTP server
lose and duplicate no mail."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).with_name("soak.py")


def test_the_short_soak_counts_every_mail_once_through_kills_and_outages(services, database_uri):
    # database_uri: this pass's database kind; the soak makes fresh databases of that kind itself.
    done = subprocess.run([sys.executable, str(SOAK), "--short"], env={**os.environ, **services},
                          capture_output=True, text=True, timeout=900, check=False)
    inbound = [line for line in done.stdout.splitlines() if "mails in" in line]
    outbound = [line for line in done.stdout.splitlines() if "queued" in line]
    print("\n" + "\n".join(inbound + outbound))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert len(inbound) >= 4 and all("duplicates 0, lost 0" in line for line in inbound), inbound
    assert len(outbound) == 2 and all("sent twice 0" in line for line in outbound), outbound
