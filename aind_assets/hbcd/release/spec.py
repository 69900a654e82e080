"""The release spec (pure): a YAML file naming the release, its sessions, QC criteria (see
:mod:`~aind_assets.hbcd.release.qc`), pipelines and ignore patterns, validated by pydantic with
errors that name the file and the field.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aind_assets.hbcd.release.qc import criteria_check

RAW = "assembly_bids"
DERIV = "derivatives"
MANIFESTS = "cbrain_misc"


#: Extensions of data files (each needs its own ``scans.tsv`` row to be released).
#: BrainVision is listed by its header (``.vhdr``); its ``.eeg``/``.vmrk`` and EEGLAB's ``.fdt``
#: follow their header as sidecars do.
DATA_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".edf", ".bdf", ".set", ".vhdr", ".snirf")

LABEL = re.compile(r"[A-Za-z0-9]+\Z")
_RELEASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


# --- the release spec --------------------------------------------------------------------------
def validate_release_id(release: str) -> str:
    if not isinstance(release, str) or not _RELEASE_ID.match(release):
        raise ValueError(
            f"release identifier {release!r} must be 1-100 characters of letters, digits, "
            "'.', '_' or '-', starting with a letter or digit (it is a folder name)"
        )
    return release


class QcSpec(BaseModel):
    """QC criteria: ``default`` for every ``scans.tsv`` row, ``modalities`` per datatype folder
    (``anat``, ``func``, ``fmap``, ``dwi``...; merged over ``default``), ``pipelines`` for the
    inputs of a pipeline's derivatives."""

    model_config = ConfigDict(extra="forbid")

    default: dict[str, Any] = Field(default_factory=dict)
    modalities: dict[str, dict[str, Any]] = Field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("default")
    @classmethod
    def _default(cls, v: dict[str, Any]) -> dict[str, Any]:
        return criteria_check(v, "qc.default")

    @field_validator("modalities", "pipelines")
    @classmethod
    def _nested(cls, v: dict[str, dict[str, Any]], info) -> dict[str, Any]:  # noqa: ANN001
        return {k: criteria_check(c, f"qc.{info.field_name}.{k}") for k, c in v.items()}

    def for_datatype(self, datatype: str) -> dict[str, tuple[Any, str]]:
        return {**self.default, **self.modalities.get(datatype, {})}


class ReleaseSpec(BaseModel):
    """What goes into one release (see ``aind_assets/hbcd/release/examples/release.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    release: str = Field(description="Release identifier: the folder under the staging root")
    description: str = ""
    dataset_name: str | None = Field(
        default=None, description="Name in rawdata/dataset_description.json (default: source's)"
    )
    sessions: list[str] | None = Field(
        default=None, description="Session labels to release (V02 or ses-V02); None: all"
    )
    min_file_age_hours: float = Field(
        default=0, ge=0, description="Files younger than this keep their session out"
    )
    qc: QcSpec = Field(default_factory=QcSpec)
    pipelines: list[str] = Field(default_factory=list, description="Derivatives to include")
    keep_inputs_of: list[str] | None = Field(
        default=None,
        description="Pipelines whose input manifests keep a below-QC file in the release "
        "(None: every pipeline with a manifest, i.e. any attempted processing)",
    )
    previous_release: str | None = Field(
        default=None, description="Release to diff against (default: the latest complete one)"
    )
    bids_ignore: list[str] = Field(
        default_factory=list,
        description="Glob patterns (relative to <release>/hbcd/) the BIDS path check skips",
    )

    @field_validator("release")
    @classmethod
    def _release(cls, v: str) -> str:
        return validate_release_id(v)

    @field_validator("previous_release")
    @classmethod
    def _previous(cls, v: str | None) -> str | None:
        return None if v is None else validate_release_id(v)

    @field_validator("sessions")
    @classmethod
    def _sessions(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        out = []
        for s in v:
            label = str(s).removeprefix("ses-")
            if not LABEL.match(label):
                raise ValueError(f"session label {s!r} must be letters and digits")
            out.append(label)
        return out

    @field_validator("pipelines", "keep_inputs_of")
    @classmethod
    def _pipelines(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        for p in v:
            if not PIPELINE_NAME.match(p) or p == MANIFESTS:
                raise ValueError(f"pipeline {p!r} is not a derivative folder name")
        if len(set(v)) != len(v):
            raise ValueError("pipelines are listed more than once")
        return v

    def criteria_for(self, datatype: str) -> dict[str, tuple[Any, str]]:
        return self.qc.for_datatype(datatype)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class _SpecLoader(yaml.SafeLoader):
    """YAML 1.2 booleans only: ``Yes``/``No``/``on``/``off`` stay strings (``HBCD_compliant:
    [Yes, equals]`` must compare with the string ``Yes``)."""


_SpecLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_release_spec(text: str | bytes, source: str = "<release spec>") -> ReleaseSpec:
    """Parse a YAML (or JSON) release spec; errors name ``source`` and the field."""
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a release spec is a mapping with at least 'release'")
    try:
        return ReleaseSpec.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(spec)'}: {err['msg']}"
            for err in e.errors()
        )
        raise ValueError(f"{source}: invalid release spec: {problems}") from None
