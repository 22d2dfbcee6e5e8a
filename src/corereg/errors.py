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
    """A declared pipeline step whose implementation belongs to a later issue."""

    def __init__(self, what: str):
        super().__init__(
            f"not implemented yet: {what}; see README, section 'Status of the pipeline'"
        )


class ToolMissing(CoreregError):
    """A comparison method's tool (package, binary, weights) is not installed here.

    The register and train steps turn this into a "not run: <reason>" row unless the
    method's ``if_missing`` is ``fail``."""

    def __init__(self, tool: str, reason: str):
        self.tool = tool
        self.reason = reason
        super().__init__(reason)
