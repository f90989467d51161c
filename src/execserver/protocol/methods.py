"""Wire method names: the only place they are spelled. Pure data."""

from __future__ import annotations

INITIALIZE = "initialize"
INITIALIZED = "initialized"

ENVIRONMENT_INFO = "environment/info"
ENVIRONMENT_STATUS = "environment/status"
ENVIRONMENT_CONFIG_READ = "environmentConfig/read"
CAPABILITIES_DISCOVER_V2 = "capabilities/discoverV2"
CAPABILITY_ROOTS_DISCOVER_V1 = "capabilityRoots/discoverV1"

PROCESS_START = "process/start"
PROCESS_READ = "process/read"
PROCESS_WRITE = "process/write"
PROCESS_SIGNAL = "process/signal"
PROCESS_TERMINATE = "process/terminate"
# Extension (not in codex 0.169): end a process's stdin. Other servers answer -32601.
PROCESS_CLOSE_STDIN = "process/closeStdin"
# Extensions (issue 20): wait on output; a PTY process waits for input.
PROCESS_WAIT = "process/wait"
PROCESS_WAITING_FOR_INPUT = "process/waitingForInput"
# Extensions (not in codex): terminal size, and processes that outlive their sessions.
PROCESS_RESIZE = "process/resize"
PROCESS_LIST = "process/list"
PROCESS_ATTACH = "process/attach"
PROCESS_DETACH = "process/detach"
PROCESS_KILL = "process/kill"
PROCESS_OUTPUT = "process/output"
PROCESS_EXITED = "process/exited"
PROCESS_CLOSED = "process/closed"

FS_READ_FILE = "fs/readFile"
FS_WRITE_FILE = "fs/writeFile"
FS_CREATE_DIRECTORY = "fs/createDirectory"
FS_GET_METADATA = "fs/getMetadata"
FS_CANONICALIZE = "fs/canonicalize"
FS_READ_DIRECTORY = "fs/readDirectory"
FS_WALK = "fs/walk"
FS_REMOVE = "fs/remove"
FS_COPY = "fs/copy"
FS_OPEN = "fs/open"
FS_READ_BLOCK = "fs/readBlock"
FS_WRITE_BLOCK = "fs/writeBlock"
FS_CLOSE = "fs/close"
# Extensions (not in codex): a file's permission bits and times (`execserver cp` keeps them).
FS_GET_ATTRIBUTES = "fs/getAttributes"
FS_SET_ATTRIBUTES = "fs/setAttributes"
FS_WATCH_MISSING = "fs/watchMissing"
FS_MISSING_CHANGED = "fs/missingChanged"

# Server -> client, only for processes started with `networkProxy`.
NETWORK_POLICY_DECISION = "network/policyDecision"
NETWORK_POLICY_REQUEST = "network/policyRequest"

# Extension (not in codex): end this connection's session now (kill its processes) instead
# of leaving it detached for the resume window. Other servers answer -32601.
SESSION_CLOSE = "session/close"

HTTP_REQUEST = "http/request"
HTTP_REQUEST_BODY_DELTA = "http/request/bodyDelta"
