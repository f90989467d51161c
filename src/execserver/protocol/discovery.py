"""Wire structs of executor discovery: `environmentConfig/read`, `capabilities/discoverV2` and
`capabilityRoots/discoverV1`. Pure data.

Optional members of the results are sent as `null`, never left out (the reference's shapes).
"""

from __future__ import annotations

from execserver.protocol.base import WireStruct
from execserver.protocol.pathuri import PathUri
from execserver.protocol.sandbox import DiscoverySandboxContext, SandboxContext

# -- environmentConfig/read ----------------------------------------------------------------------


class EnvironmentConfigReadParams(WireStruct):
    rust_name = "EnvironmentConfigReadParams"
    rust_len = 3

    cwd: PathUri
    config_paths: list[list[str]]
    requirements_paths: list[list[str]]


class EnvironmentConfigLayer(WireStruct):
    source: str
    """Where the layer comes from, as the reference names it: `user (<path>)`, ..."""
    base_dir: PathUri
    toml: str
    """The layer's requested keys, re-serialised as TOML."""


class EnvironmentConfigLayerStack(WireStruct):
    layers: list[EnvironmentConfigLayer]
    """Lowest precedence first."""
    cloud_insertion_index: int
    """Where the orchestrator inserts its cloud-managed layer into `layers`."""


class EnvironmentConfigReadResponse(WireStruct):
    user_home_dir: PathUri
    codex_home_dir: PathUri
    hostname: str
    config: EnvironmentConfigLayerStack
    requirements: EnvironmentConfigLayerStack


# -- shared by both discoveries ------------------------------------------------------------------


class CapabilityTextFile(WireStruct):
    path: PathUri
    contents: str


class DiscoveredPluginFiles(WireStruct):
    manifest: CapabilityTextFile
    mcp_config: CapabilityTextFile | None
    apps_config: CapabilityTextFile | None


# -- capabilities/discoverV2 ---------------------------------------------------------------------


class CapabilitiesDiscoverV2Params(WireStruct):
    rust_name = "DiscoverV2CapabilitiesRequest"
    rust_len = 2

    cwd: PathUri
    sandbox: DiscoverySandboxContext | None = None


class SkillToolDependency(WireStruct):
    type: str
    value: str
    description: str | None
    transport: str | None
    command: str | None
    url: str | None
    oauth_callback_port: int | None


class SkillDependencies(WireStruct):
    tools: list[SkillToolDependency]


class SkillPolicy(WireStruct):
    allow_implicit_invocation: bool | None
    products: list[str]


class SkillDiscoveryRoot(WireStruct):
    id: str
    path: PathUri


class ExecutorPluginSkill(WireStruct):
    name: str
    description: str
    short_description: str | None
    path: PathUri
    dependencies: SkillDependencies | None
    policy: SkillPolicy | None


class ExecutorSkill(WireStruct):
    name: str
    description: str
    short_description: str | None
    path: PathUri
    discovery_root: SkillDiscoveryRoot
    dependencies: SkillDependencies | None
    policy: SkillPolicy | None


class ExecutorPlugin(WireStruct):
    id: str
    """`<plugin>@<marketplace>`, from the plugin cache's directory names."""
    display_name: str
    remote_plugin_id: str | None
    version: str
    root: PathUri
    files: DiscoveredPluginFiles
    skills: list[ExecutorPluginSkill]


class CapabilitiesDiscoverV2Response(WireStruct):
    plugins: list[ExecutorPlugin]
    skills: list[ExecutorSkill]
    warnings: list[str]


# -- capabilityRoots/discoverV1 ------------------------------------------------------------------


class CapabilityRootRequest(WireStruct):
    rust_name = "WireCapabilityRootDiscoverRequest"
    rust_len = 3

    id: str
    path: PathUri
    sandbox: SandboxContext | None = None


class CapabilityRootsDiscoverParams(WireStruct):
    rust_name = "WireCapabilityRootsDiscoverParams"
    rust_len = 1

    roots: list[CapabilityRootRequest]


class DiscoveredSkillFiles(WireStruct):
    instructions: CapabilityTextFile
    metadata: CapabilityTextFile | None


class CapabilityRootDiscovery(WireStruct):
    id: str
    path: PathUri
    plugin: DiscoveredPluginFiles | None
    skills: list[DiscoveredSkillFiles]
    namespace_manifests: list[CapabilityTextFile]
    warnings: list[str]
    error: str | None


class CapabilityRootsDiscoverResponse(WireStruct):
    roots: list[CapabilityRootDiscovery]
