"""A disk with a volatile write cache, served over NBD: the power-cut test's block device.

Writes stay in memory until the client flushes (or writes with FUA); reads see them. At
:meth:`VolatileDisk.cut` each 4 KiB block still cached independently reaches the image
or not, as a real disk may reorder and drop its cache when the power goes; afterwards
nothing more is served. :class:`DiskServer` speaks the NBD protocol (fixed newstyle
handshake, simple replies) to one client: the Linux ``nbd`` driver in the guest.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
from pathlib import Path

BLOCK = 4096
# NBD protocol (fixed newstyle handshake, simple replies)
NBDMAGIC, IHAVEOPT, REPLY_MAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
REQUEST_MAGIC, SIMPLE_REPLY = 0x25609513, 0x67446698
OPT_EXPORT_NAME, OPT_INFO, OPT_GO, REP_ACK, REP_INFO, REP_ERR_UNSUP = 1, 6, 7, 1, 3, (1 << 31) + 1
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, FLAG_FUA = 0, 1, 2, 3, 1
TRANSMISSION_FLAGS = 1 | 4 | 8  # has flags, sends flush, sends FUA


class VolatileDisk:
    """An image file behind a write cache that only a flush (or a FUA write) empties."""

    def __init__(self, image: Path, rng: random.Random, keep: float = 0.5) -> None:
        self.fd = os.open(image, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.cache: dict[int, bytes] = {}
        self.rng, self.keep = rng, keep
        self.lock = threading.Lock()
        self.dead = False
        self.stats = {"writes": 0, "flushes": 0, "cut_kept": 0, "cut_lost": 0}

    def _block(self, n: int) -> bytes:
        got = self.cache.get(n)
        return got if got is not None else os.pread(self.fd, BLOCK, n * BLOCK).ljust(BLOCK, b"\0")

    def read(self, offset: int, length: int) -> bytes:
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        data = b"".join(self._block(n) for n in range(first, last + 1))
        return data[offset - first * BLOCK :][:length]

    def write(self, offset: int, data: bytes, fua: bool) -> None:
        self.stats["writes"] += 1
        pos = 0
        while pos < len(data):
            n, within = divmod(offset + pos, BLOCK)
            take = min(BLOCK - within, len(data) - pos)
            block = bytearray(self._block(n))
            block[within : within + take] = data[pos : pos + take]
            if fua:
                os.pwrite(self.fd, bytes(block), n * BLOCK)
                self.cache.pop(n, None)
            else:
                self.cache[n] = bytes(block)
            pos += take

    def flush(self) -> None:
        self.stats["flushes"] += 1
        for n, block in sorted(self.cache.items()):
            os.pwrite(self.fd, block, n * BLOCK)
        self.cache.clear()

    def cut(self) -> None:
        """The power is gone: each cached block reaches the medium or not; nothing more is served."""
        with self.lock:
            if self.dead:
                return
            self.dead = True
            for n, block in self.cache.items():
                if self.rng.random() < self.keep:
                    os.pwrite(self.fd, block, n * BLOCK)
                    self.stats["cut_kept"] += 1
                else:
                    self.stats["cut_lost"] += 1
            self.cache.clear()
            os.close(self.fd)

    def close(self) -> None:
        """An orderly power-off: the guest flushed what it meant to keep."""
        with self.lock:
            if not self.dead:
                self.flush()
                self.dead = True
                os.close(self.fd)


class DiskServer:
    """Serves one :class:`VolatileDisk` to one NBD client (the guest)."""

    def __init__(self, disk: VolatileDisk, host: str) -> None:
        self.disk = disk
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(60)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        finally:
            self.listener.close()
        with conn, contextlib.suppress(EOFError, OSError):
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        def recv(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = conn.recv(n - len(buf))
                if not chunk:
                    raise EOFError
                buf += chunk
            return buf

        disk = self.disk
        conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 1 | 2))
        (client_flags,) = struct.unpack(">I", recv(4))
        while True:  # options
            _, option, length = struct.unpack(">QII", recv(16))
            recv(length)
            if option == OPT_EXPORT_NAME:
                zeroes = b"" if client_flags & 2 else b"\0" * 124
                conn.sendall(struct.pack(">QH", disk.size, TRANSMISSION_FLAGS) + zeroes)
                break
            if option in (OPT_INFO, OPT_GO):
                info = struct.pack(">HQH", 0, disk.size, TRANSMISSION_FLAGS)
                conn.sendall(struct.pack(">QIII", REPLY_MAGIC, option, REP_INFO, len(info)) + info)
                conn.sendall(struct.pack(">QIII", REPLY_MAGIC, option, REP_ACK, 0))
                if option == OPT_GO:
                    break
                continue
            conn.sendall(struct.pack(">QIII", REPLY_MAGIC, option, REP_ERR_UNSUP, 0))
        while True:  # requests
            _, flags, command, handle, offset, length = struct.unpack(">IHHQQI", recv(28))
            data = recv(length) if command == CMD_WRITE else b""
            with disk.lock:
                if disk.dead:
                    return
                if command == CMD_READ:
                    reply = disk.read(offset, length)
                elif command == CMD_WRITE:
                    disk.write(offset, data, bool(flags & FLAG_FUA))
                    reply = b""
                elif command == CMD_FLUSH:
                    disk.flush()
                    reply = b""
                elif command == CMD_DISC:
                    return
                else:
                    conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY, 22, handle))
                    continue
            conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY, 0, handle) + reply)
