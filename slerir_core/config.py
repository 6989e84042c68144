"""Configuration: YAML files validated into frozen dataclasses.

One config describes the network (and the inference tile size); training configs embed it. Named
configs live in ``slerir_core/configs``; any path to a YAML file works too. Unknown keys and values of
the wrong type or range are errors that name the file and the key, so a typo never silently falls back
to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from slerir_core.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
STAGES: tuple[str, ...] = ("enc1", "enc2", "enc3", "latent", "dec3", "dec2", "dec1", "refine")

T = TypeVar("T")


@dataclass(frozen=True)
class ExtractorConfig:
    """An open_clip image tower used as a degradation or content extractor.

    Attributes:
        model_name: open_clip model name (``ViT-B-32``) or one registered by SLER-IR (``slerir-vit-tiny``).
        pretrained: local weights file (CLIP, or DA-CLIP for ``kind: daclip``); ``None`` trains from scratch.
        kind: ``clip`` (a plain tower) or ``daclip`` (tower + controller; when the degradation and content
            extractors are the same ``daclip`` config, one module serves both).
    """

    model_name: str
    pretrained: str | None = None
    kind: str = "clip"

    def __post_init__(self) -> None:
        require(self.kind in ("clip", "daclip"), "extractor kind must be 'clip' or 'daclip'")


@dataclass(frozen=True)
class ClusteringConfig:
    """Monte-Carlo-regularised uniform clustering of the expert centres (no gradients)."""

    bank_size: int = 2048
    sample_size: int = 256
    momentum: float = 0.9
    sinkhorn_iters: int = 5
    sinkhorn_eps: float = 0.05
    repulsion: float = 0.05

    def __post_init__(self) -> None:
        require(self.bank_size >= 1 and self.sample_size >= 1, "bank_size and sample_size must be >= 1")
        require(0.0 <= self.momentum < 1.0, "momentum must be in [0, 1)")
        require(self.sinkhorn_iters >= 1 and self.sinkhorn_eps > 0, "sinkhorn_iters >= 1 and sinkhorn_eps > 0")
        require(self.repulsion >= 0, "repulsion must be >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """The SLER-IR network: backbone, experts, router, GLGF and extractors.

    Attributes:
        blocks: transformer blocks of encoder levels 1-3 and of the latent stage.
        decoder_blocks: blocks of dec3, dec2, dec1.
        heads: attention heads at levels 1-4 (dec1 and refine use level 1's).
        num_experts: C, experts per routed stage.
        routing_dim: d, dimension of each stage's routing vector on the unit sphere.
        router_temperature: tau in softmax(cos / tau).
        per_stage_centres: one set of expert centres per stage (each clustered on its own stage's routing
            vectors) instead of the one shared set of Eq. 2.
        soft_gradients: in soft routing (training phase 1), which experts learn from a sample: ``argmax``
            (§4.1: only the chosen one; the others' outputs count in the mix but are detached) or ``all``
            (§3.2: every expert, in proportion to its probability).
        soft_skip: in soft routing on a CPU, an unchosen expert whose probability for a sample is below this
            does not run for it; its term in the mix is dropped (at most ``soft_skip`` of the mass per expert).
            Which samples remain is read back to the host, free on a CPU; elsewhere every expert runs, so
            that a GPU never waits for the host and its shapes stay fixed.
        hc_margin: lambda of the hyperspherical contrastive loss (Eq. 9).
        hc_alpha: weight of that loss in phase 1 (Eq. 10).
        route_alpha: weight, in phase 1, of a routing-consistency term: cross-entropy between each stage's
            routing probabilities and the expert that stage assigns to the sample's task (``Router.assign_tasks``,
            a balanced assignment of the task prototypes to the centres). 0 (the paper) leaves routing to L_HC
            and the clustering alone.
        glgf: build the Global-Local Granularity Fusion prior and inject it at every stage.
        layernorm: ``with_bias`` (PromptIR) or ``bias_free``.
        tasks: degradation names the router's task prototypes refer to (filled by training).
        tile, overlap: default tiling for inference.
    """

    name: str
    degradation_extractor: ExtractorConfig
    content_extractor: ExtractorConfig
    in_channels: int = 3
    dim: int = 48
    blocks: tuple[int, ...] = (4, 6, 6, 8)
    decoder_blocks: tuple[int, ...] = (6, 6, 4)
    refine_blocks: int = 4
    heads: tuple[int, ...] = (1, 2, 4, 8)
    ffn_factor: float = 2.66
    bias: bool = False
    layernorm: str = "with_bias"
    num_experts: int = 3
    routing_dim: int = 64
    router_hidden: int = 512
    router_temperature: float = 0.1
    per_stage_centres: bool = False
    soft_gradients: str = "argmax"
    soft_skip: float = 0.0
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    hc_margin: float = 0.5
    hc_alpha: float = 1.0
    route_alpha: float = 0.0
    glgf: bool = True
    prior_dim: int = 64
    prior_heads: int = 4
    crop_grid: int = 4
    tasks: tuple[str, ...] = ()
    tile: int = 512
    overlap: int = 64

    FORMER_NAMES: ClassVar[dict[str, str]] = {"per_layer_centres": "per_stage_centres"}
    """Keys renamed since weights files were first written: ``from_dict`` reads them under their new names."""

    def __post_init__(self) -> None:
        require(self.in_channels == 3, "in_channels must be 3 (grey and multi-channel data are mapped to RGB)")
        require(self.dim >= 2 and self.dim % 2 == 0, "dim must be even and >= 2 (the down-samplers halve it)")
        require(len(self.blocks) == 4 and all(b >= 1 for b in self.blocks), "blocks needs 4 entries >= 1")
        require(
            len(self.decoder_blocks) == 3 and all(b >= 1 for b in self.decoder_blocks),
            "decoder_blocks needs 3 entries >= 1",
        )
        require(self.refine_blocks >= 1, "refine_blocks must be >= 1")
        require(len(self.heads) == 4 and all(h >= 1 for h in self.heads), "heads needs 4 entries >= 1")
        for level, heads in enumerate(self.heads):
            require(
                (self.dim * 2**level) % heads == 0,
                f"level {level + 1} has {self.dim * 2**level} channels, not divisible by {heads} heads",
            )
        require((2 * self.dim) % self.heads[0] == 0, "dec1/refine channels must be divisible by heads[0]")
        require(self.ffn_factor > 0, "ffn_factor must be > 0")
        require(self.layernorm in ("with_bias", "bias_free"), "layernorm must be 'with_bias' or 'bias_free'")
        require(self.num_experts >= 1, "num_experts must be >= 1")
        require(self.routing_dim >= 2 and self.router_hidden >= 1, "routing_dim >= 2 and router_hidden >= 1")
        require(self.router_temperature > 0, "router_temperature must be > 0")
        require(self.soft_gradients in ("argmax", "all"), "soft_gradients must be 'argmax' or 'all'")
        require(0.0 <= self.soft_skip < 1.0, "soft_skip must be in [0, 1)")
        require(self.hc_margin >= 0 and self.hc_alpha >= 0, "hc_margin and hc_alpha must be >= 0")
        require(self.route_alpha >= 0, "route_alpha must be >= 0")
        require(
            self.prior_dim >= 1 and self.prior_dim % self.prior_heads == 0,
            "prior_dim must be a positive multiple of prior_heads",
        )
        require(self.crop_grid >= 1, "crop_grid must be >= 1")
        require(len(set(self.tasks)) == len(self.tasks), "tasks must be distinct")
        require(self.tile >= 16 and self.tile % 8 == 0, "tile must be a multiple of 8, at least 16")
        require(0 <= self.overlap < self.tile // 2, "overlap must be in [0, tile / 2)")

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels of the eight routed stages, in ``STAGES`` order."""
        d = self.dim
        return (d, 2 * d, 4 * d, 8 * d, 4 * d, 2 * d, 2 * d, 2 * d)

    @property
    def stage_heads(self) -> tuple[int, ...]:
        """Attention heads of the eight routed stages."""
        h = self.heads
        return (h[0], h[1], h[2], h[3], h[2], h[1], h[0], h[0])

    @property
    def stage_blocks(self) -> tuple[int, ...]:
        """Transformer blocks in one expert of each of the eight routed stages."""
        return (*self.blocks, *self.decoder_blocks, self.refine_blocks)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, for YAML files and weights metadata."""
        return to_plain(self)


def require(ok: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``ok``: the one check every config field goes through."""
    if not ok:
        raise ConfigError(message)


def to_plain(value: Any) -> Any:
    """A config as plain data for YAML and JSON: dataclasses become dicts and tuples lists, at every depth."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    return value


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples and dicts to dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(option, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys and ill-typed values.

    Args:
        cls: a dataclass type.
        data: keys and values, as read from YAML.
        where: prefix for error messages (the file and the section).

    Raises:
        ConfigError: naming the offending key.
    """
    data = with_current_names(cls, data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(names)}")
    kwargs = {key: _coerce(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    except TypeError as err:  # a required key is missing
        raise ConfigError(f"{where}: {err}") from None


def with_current_names(cls: type, data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` with the keys ``cls.FORMER_NAMES`` lists under their current names.

    A former name wins over the current one: an override written with the old name (``--set
    model.per_layer_centres=true`` on a resolved config, which holds the new name) still applies.
    """
    former = getattr(cls, "FORMER_NAMES", {})
    if not former.keys() & data.keys():
        return data
    current = {key: value for key, value in data.items() if key not in former}
    current.update({former[key]: value for key, value in data.items() if key in former})
    return current


def read_yaml(name_or_path: str | Path, search_dir: Path = CONFIG_DIR) -> tuple[dict[str, Any], str]:
    """Read a config mapping from a file path, or from ``search_dir/<name>.yaml`` for a bare name.

    Returns:
        The mapping and a description of where it came from, for error messages.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = search_dir / f"{name_or_path}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in search_dir.glob("*.yaml"))
            raise ConfigError(f"no config named {str(name_or_path)!r}; named configs are {known}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data, str(path)


def load_config(name_or_path: str | Path | Mapping[str, Any]) -> ModelConfig:
    """Load a model config: a named one (``paper``, ``compact``, ``tiny``), a YAML path, or a mapping.

    Raises:
        ConfigError: for a missing file, invalid YAML, unknown keys or bad values.
    """
    if isinstance(name_or_path, Mapping):
        return from_dict(ModelConfig, name_or_path)
    data, where = read_yaml(name_or_path)
    return from_dict(ModelConfig, data, where)


def list_configs() -> list[str]:
    """Names of the configs shipped with the package."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
