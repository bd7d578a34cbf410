"""Random ids: alphabet, length, uniqueness, and no shared randomness across a fork."""

from __future__ import annotations

import collections
import os
import string

from happy_socket.ids import new_id, random_id


def test_ids_are_alphanumeric_of_the_asked_length_and_unique() -> None:
    ids = [new_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 24 and i.isascii() and i.isalnum() for i in ids)
    assert len(random_id()) == 12
    assert len(random_id(5000)) == 5000  # longer than the pool


def test_every_character_is_about_equally_likely() -> None:
    counts = collections.Counter("".join(random_id(62_000) for _ in range(5)))
    assert set(counts) == set(string.ascii_letters + string.digits)
    assert min(counts.values()) > 4_000 and max(counts.values()) < 6_000  # expected 5,000


def test_a_forked_child_draws_fresh_bytes() -> None:
    random_id()  # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next id
        os.write(write, random_id(32).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != random_id(32)
