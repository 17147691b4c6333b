"""A TCP relay standing between the router and a processor's scheme port.

The processor publishes the relay's address as its scheme endpoint, so every call the
router makes to it (routed prepares, status pushes from the outbox) crosses the relay.
Bytes are passed through untouched -- mutual TLS is end to end -- but the relay can *hold*
them: once `hold_when(condition, direction)` is armed, the first bytes going that way
(`TO_PROCESSOR` or `TO_ROUTER`) that arrive while `condition()` is true, and everything
after them, wait in the relay until `open()` forwards them or `cut_held()` drops those
connections.

With the condition "the processor has stored its answer to the prepare" a test catches
exactly one of two messages. Towards the processor, the status push that follows a
fulfil: the prepare's own bytes pass (the processor cannot answer a request it has not
received), anything the router sends afterwards is held. Towards the router, the fulfil
itself: the TLS handshake passes, the answer (written after the processor's commit) is
held. No sleep and no race: the relay decides per chunk, before forwarding it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Final

_CHUNK_BYTES: Final = 65536
TO_PROCESSOR: Final = "to_processor"
TO_ROUTER: Final = "to_router"
_CONNECT_TIMEOUT_S: Final = 5.0


class _Pair:
    """One router connection and the relay's connection onward to the processor."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class Line:
    """Listen on a free loopback port and relay to `target_port`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._condition: Callable[[], bool] | None = None
        self._direction = TO_PROCESSOR
        self._holding = False
        self._released = threading.Condition(self._lock)
        self._generation = 0  # bumped by open() and cut_held(): wakes the held pumps
        self._cut_generations: set[int] = set()
        self._held: list[_Pair] = []
        self._pairs: list[_Pair] = []
        self._stopped = False
        self._blocked = False
        threading.Thread(target=self._accept, name="line-accept", daemon=True).start()

    # --- control ----------------------------------------------------------------------

    def hold_when(self, condition: Callable[[], bool], direction: str = TO_PROCESSOR) -> None:
        """From now on, hold bytes going `direction` that arrive once `condition()` holds."""
        with self._lock:
            self._condition = condition
            self._direction = direction
            self._holding = False

    def held(self) -> int:
        """How many connections have bytes waiting in the relay."""
        with self._lock:
            return len(self._held)

    def open(self) -> None:
        """Disarm, unblock and forward whatever is held."""
        with self._lock:
            self._blocked = False
            self._condition = None
            self._holding = False
            self._held.clear()
            self._generation += 1
            self._released.notify_all()

    def cut_held(self) -> None:
        """Disarm, drop the held bytes and close their connections (the sender sees a reset)."""
        with self._lock:
            self._condition = None
            self._holding = False
            pairs, self._held = self._held, []
            self._cut_generations.add(self._generation)
            self._generation += 1
            self._released.notify_all()
        for pair in pairs:
            pair.close()

    def block(self) -> None:
        """Cut everything held or open and refuse new connections until `open()`: the
        processor behind the line is unreachable for as long as the test wants."""
        self.cut_held()
        with self._lock:
            self._blocked = True
            pairs = list(self._pairs)
        for pair in pairs:
            pair.close()

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            pairs = list(self._pairs)
        self.open()
        with contextlib.suppress(OSError):
            self._listener.close()
        for pair in pairs:
            pair.close()

    # --- relaying ---------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                blocked = self._blocked
            if blocked:
                client.close()
                continue
            try:
                server = socket.create_connection(
                    ("127.0.0.1", self.target_port), timeout=_CONNECT_TIMEOUT_S
                )
                server.settimeout(None)
            except OSError:
                client.close()  # the processor is down: the router sees the door shut
                continue
            pair = _Pair(client, server)
            with self._lock:
                if self._stopped:
                    pair.close()
                    return
                self._pairs = [known for known in self._pairs if not known.closed] + [pair]
            threading.Thread(target=self._upstream, args=(pair,), daemon=True).start()
            threading.Thread(target=self._downstream, args=(pair,), daemon=True).start()

    def _must_hold(self, pair: _Pair, direction: str) -> bool:
        """Whether these bytes wait; if so, wait here until released (True: dropped)."""
        with self._lock:
            if self._condition is None or self._direction != direction:
                return False
            if not self._holding:
                self._holding = self._condition()
            if not self._holding:
                return False
            self._held.append(pair)
            generation = self._generation
            while self._generation == generation:
                self._released.wait()
            return generation in self._cut_generations

    def _upstream(self, pair: _Pair) -> None:
        """Router -> processor."""
        try:
            while True:
                data = pair.client.recv(_CHUNK_BYTES)
                if not data:
                    pair.server.shutdown(socket.SHUT_WR)
                    return
                if self._must_hold(pair, TO_PROCESSOR):
                    pair.close()
                    return
                pair.server.sendall(data)
        except OSError:
            pair.close()

    def _downstream(self, pair: _Pair) -> None:
        """Processor -> router."""
        try:
            while True:
                data = pair.server.recv(_CHUNK_BYTES)
                if not data:
                    pair.client.shutdown(socket.SHUT_WR)
                    return
                if self._must_hold(pair, TO_ROUTER):
                    pair.close()
                    return
                pair.client.sendall(data)
        except OSError:
            pair.close()
