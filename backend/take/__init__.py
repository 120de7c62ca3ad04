"""Takes, after the networks: the streaming writer, temporal smoothing and gap filling, the preview video and the
emotion plot. The format itself (keys, shapes, the reader) is the contract's: :mod:`emoca_contract.take`."""
