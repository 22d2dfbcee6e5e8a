"""Errors the pipeline reports to the user as one clear line."""


class CoreregError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits with status 1."""


class InputError(CoreregError):
    """A file given to a step is missing, unreadable or violates the data contract."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class NotImplementedYet(CoreregError):
    """An option the configuration accepts but this version of the pipeline cannot run."""

    def __init__(self, what: str):
        super().__init__(f"not implemented: {what}; see docs/methods.md and docs/method.md")


class ToolMissing(CoreregError):
    """A comparison method's tool (package, binary, weights) is not installed here.

    The register and train steps turn this into a "not run: <reason>" row unless the
    method's ``if_missing`` is ``fail``."""

    def __init__(self, tool: str, reason: str):
        self.tool = tool
        self.reason = reason
        super().__init__(reason)
