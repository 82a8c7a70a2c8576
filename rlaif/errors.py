"""The user's mistakes. Everything rlaif raises for bad input, a bad template or a bad
setting derives from `UserError`; the CLI prints those as one line and lets anything else
(a bug) keep its traceback."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Something the user gave rlaif cannot be used; the message says what and where."""


class InputError(UserError):
    """A row or a data file that cannot be used, located by file, line (or record) and field."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str):
        self.file, self.line, self.field, self.message = file, line, field, message
        where = file + (f":{line}" if line else "") + (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")

    def to_record(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "error": self.message}


class ConfigError(UserError):
    """A setting that cannot be used: in a file (named with its line and key) or as an option."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None, key: str | None = None):
        self.file, self.line, self.key, self.message = file, line, key, message
        where = ": ".join(part for part in ((file or "") + (f":{line}" if file and line else ""), f"key '{key}'" if key else "") if part)
        super().__init__(f"{where}: {message}" if where else message)
