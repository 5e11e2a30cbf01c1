"""Domain rejections: values with a reason code, named as sentences, and the field at fault."""

from __future__ import annotations

import msgspec


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    field: str | None = None

    @classmethod
    def of(cls, code: str, field: str | None, message: str) -> Rejection:
        return cls(code=code, field=field, message=message)
