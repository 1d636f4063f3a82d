"""The rendezvous of a multi-rank job: a torch.distributed TCPStore, held and served by the
launcher (launcher.py) for the whole job."""
from __future__ import annotations

import select
import socket


class Rendezvous:
    """The job's torch.distributed rendezvous (a TCPStore), held and served by the launcher for the
    whole job, as torchrun's agent does. Its listening socket is bound before any rank starts and
    stays bound until the job has ended: no other process (another job, a rank's own gloo
    connections) can take the port between its choice and its use, a rank can never connect to
    itself through a port nobody listens on yet, and the store outlives every rank, however they
    finish. The ranks find it through MASTER_ADDR/MASTER_PORT and TORCHELASTIC_USE_AGENT_STORE
    (torch's env:// rendezvous then makes every rank, rank 0 included, a client). torch loads
    only when the first rank connects, so jobs that never rendezvous never pay for it."""

    def __init__(self):
        self.sock: socket.socket | None = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)             # connections wait in the backlog until the store serves
        self.port = self.sock.getsockname()[1]
        self.store = None

    def env(self) -> dict[str, str]:
        return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(self.port), "TORCHELASTIC_USE_AGENT_STORE": "True"}

    def serve_when_asked(self) -> None:
        """Start the store once a rank has connected (its request waits in the socket meanwhile)."""
        if self.sock is None or not select.select([self.sock], [], [], 0)[0]:
            return
        from datetime import timedelta

        from torch.distributed import TCPStore
        self.store = TCPStore("127.0.0.1", self.port, None, True, timedelta(hours=2), wait_for_workers=False,
                              master_listen_fd=self.sock.detach(), use_libuv=True)
        self.sock = None                   # the store owns the socket now

    def close(self) -> None:
        self.store = None                  # stops the store's server and closes its socket
        if self.sock is not None:
            self.sock.close()
            self.sock = None
