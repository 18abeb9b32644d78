"""Running untrusted programs (what a policy wrote): a backend behind one interface. `bwrap.py` runs each program in
a fresh bubblewrap sandbox on this machine; a backend for an existing sandbox cluster speaks its HTTP API."""
