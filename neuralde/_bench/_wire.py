"""The messages between the benchmark and its memory worker: each preceded by its
length in 8 bytes, big-endian."""


def read_message(stream) -> bytes | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    return stream.read(int.from_bytes(head, "big"))


def write_message(stream, data: bytes) -> None:
    stream.write(len(data).to_bytes(8, "big") + data)
    stream.flush()
