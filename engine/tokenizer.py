"""Text <-> token ids through a checkpoint's `tokenizer.json` (the `tokenizers` library), and the
decoded text of a growing output kept a few tokens at a time (IncrementalText)."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer


class Tokenizer:
    def __init__(self, path: str | Path):
        self._tok = _HFTokenizer.from_file(str(path))

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "Tokenizer | None":
        path = Path(model_dir) / "tokenizer.json"
        return cls(path) if path.exists() else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """add_special_tokens: what the tokenizer's post-processor adds (e.g. Llama's BOS); text
        rendered by a chat template has its own."""
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def token(self, token_id: int) -> str:
        """One token's text as the vocabulary holds it (special tokens included)."""
        return self._tok.id_to_token(token_id) or ""

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()


REPLACEMENT = "\ufffd"      # what decoding shows for the bytes of a character not complete yet


class IncrementalText:
    """The decoded text of a growing list of token ids (a request's output), extended as tokens
    are appended without decoding the whole list again: each update decodes only a short window
    of the last tokens.

    Decoding tokens separately can differ from decoding them together: a byte-level token may
    hold part of a character (the text then ends in U+FFFD until the character is complete), and
    a decoder may treat a sequence's first token apart (SentencePiece drops its leading space).
    So the window starts a few tokens back: decode(ids[prefix_offset:]) minus the text of
    ids[prefix_offset:read_offset] is the text the tokens from read_offset on add, read in
    context. Text that ends in U+FFFD is kept pending (shown, never committed) until a later token
    completes it. Should the window ever disagree with the text before it, the whole list is
    decoded once and the window starts afresh."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        self._pieces: list[str] = []     # the committed text: the text of ids[:read_offset]
        self._length = 0
        self.pending = ""                # text of the tokens after read_offset, not final yet
        self._prefix_offset = self._read_offset = 0
        self._prefix_text = ""           # decode(ids[prefix_offset:read_offset])

    @property
    def text(self) -> str:
        """The whole text (joined on demand, not per update)."""
        return "".join(self._pieces) + self.pending

    def __len__(self) -> int:
        return self._length + len(self.pending)

    def update(self, ids: list[int]) -> int:
        """Take in the tokens appended to `ids` since the last call; returns the offset from which
        the text may differ from the one before this call (it is unchanged before it)."""
        window = self._tok.decode(ids[self._prefix_offset:])
        if not window.startswith(self._prefix_text):
            return self._restart(ids)
        changed = self._length
        delta = window[len(self._prefix_text):]
        if delta and not delta.endswith(REPLACEMENT):
            self._pieces.append(delta)
            self._length += len(delta)
            self._prefix_offset, self._read_offset = self._read_offset, len(ids)
            self._prefix_text = self._tok.decode(ids[self._prefix_offset:self._read_offset])
            self.pending = ""
        else:
            self.pending = delta
        return changed

    def tail(self, start: int) -> str:
        """The text from offset `start` on (near the end: this walks back over the last pieces)."""
        parts, at = [self.pending], self._length
        for piece in reversed(self._pieces):
            if at <= start:
                break
            parts.append(piece)
            at -= len(piece)
        return "".join(reversed(parts))[max(0, start - at):]

    def _restart(self, ids: list[int]) -> int:
        old, full = self.text, self._tok.decode(ids)
        changed = next((i for i, (a, b) in enumerate(zip(old, full)) if a != b), min(len(old), len(full)))
        self.__init__(self._tok)
        self.update(ids)            # the window is the whole list: it cannot disagree
        return changed
