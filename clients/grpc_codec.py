"""Between the JSON wire models (protocol.py) and the gRPC messages (v1/reward.proto), both ways.

The pydantic models stay the one place where a request is validated: the server decodes a gRPC message into
the same model the HTTP face receives, so both faces accept and refuse exactly the same things.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel

from arbiter.clients import protocol as wire
from arbiter.clients.v1 import reward_pb2 as pb

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=Message)

MESSAGES: dict[type[BaseModel], type[Message]] = {
    wire.ScoreRequest: pb.ScoreRequest,
    wire.ScoreResponse: pb.ScoreResponse,
    wire.CompareRequest: pb.CompareRequest,
    wire.CompareResponse: pb.CompareResponse,
    wire.RankRequest: pb.RankRequest,
    wire.RankResponse: pb.RankResponse,
    wire.ModelList: pb.ListModelsResponse,
    wire.JudgeRequest: pb.JudgeRequest,
    wire.JudgeResponse: pb.JudgeResponse,
    wire.RewardRequest: pb.RewardRequest,
    wire.RewardResponse: pb.RewardResponse,
}
VALUE_MAPS = ("components", "extras")  # map<string, Values> in the proto, dict[str, list[float]] on the wire


def _prompt_to_proto(value: Any) -> dict[str, Any]:
    return {"text": value} if isinstance(value, str) else {"chat": {"messages": value}}


def _prompt_from_proto(value: dict[str, Any]) -> Any:
    if "text" in value:
        return value["text"]
    if "chat" in value:
        return value["chat"].get("messages", [])
    return None  # an unset oneof: the model's validation names the missing prompt


def _walk(value: Any, convert: Any) -> Any:
    """Applies `convert` to every `prompt` field, at any depth."""
    if isinstance(value, dict):
        return {k: convert(v) if k == "prompt" and v is not None else _walk(v, convert) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, convert) for v in value]
    return value


@overload
def to_proto(model: BaseModel) -> Message: ...


@overload
def to_proto(model: BaseModel, message_type: type[P]) -> P: ...


def to_proto(model: BaseModel, message_type: type[Message] | None = None) -> Message:
    """The model's gRPC message, of the type MESSAGES gives; a caller that names the type gets it typed as such
    (and a TypeError where the table says otherwise)."""
    expected = MESSAGES[type(model)]
    if message_type is not None and message_type is not expected:
        raise TypeError(f"{type(model).__name__} travels as {expected.__name__}, not {message_type.__name__}")
    if isinstance(model, wire.CompareRequest):  # the single-pair form travels as a one-pair list
        model = wire.CompareRequest(model=model.model, pairs=model.all_pairs())
    data = _walk(model.model_dump(exclude_none=True), _prompt_to_proto)
    if isinstance(model, wire.ScoreResponse) and "objectives" in data:
        data["objectives"] = [{"values": row} for row in data["objectives"]]
    if isinstance(model, wire.RewardResponse):
        for field in VALUE_MAPS:
            data[field] = {k: {"values": v} for k, v in data[field].items()}
        data["verifications"] = {k: {"items": v} for k, v in data["verifications"].items()}
        if "failure_kind" in data:  # a repeated field holds no nulls: each item's failure is a message
            data["failure_kind"] = [{} if kind is None else {"kind": kind} for kind in data["failure_kind"]]
    return json_format.ParseDict(data, expected())


def from_proto(message: Message, model_type: type[M]) -> M:
    """Raises pydantic.ValidationError for a message the JSON face would refuse too."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    data = _walk(data, _prompt_from_proto)
    if data.get("model") == "":
        data["model"] = None  # proto3 strings have no "unset": empty means the default model
    if model_type is wire.ScoreRequest:
        data["step_aggregate"] = data.get("step_aggregate") or "min"
        for item in data.get("items", []):
            item["steps"] = item.get("steps") or None
            if item["steps"] is None:  # before steps, an empty response travelled as an unset one
                item.setdefault("response", "")
    if model_type is wire.ScoreResponse:
        data["normalized_scores"] = data.get("normalized_scores") or None
        data["objectives"] = [row.get("values", {}) for row in data.get("objectives", [])] or None
        data["steps"] = data.get("steps") or None
    if model_type is wire.JudgeRequest:  # proto3 "unset" is the empty value: let the model's defaults apply
        for field in ("mode", "sampling", "constitution", "principles"):
            if not data.get(field):
                data.pop(field, None)
    if model_type is wire.RewardRequest and not data.get("spec"):
        data["spec"] = None
    if model_type is wire.RewardResponse:
        for field in VALUE_MAPS:
            data[field] = {k: v.get("values", []) for k, v in data.get(field, {}).items()}
        data["verifications"] = {k: v.get("items", []) for k, v in data.get("verifications", {}).items()}
        # Without verifier components the lists are absent on the JSON face; proto3 sends them empty.
        data["mask"] = data.get("mask") or None
        data["failure_kind"] = [f.get("kind") for f in data.get("failure_kind", [])] or None
    if model_type is wire.ModelList:
        for info in data.get("models", []):
            info.setdefault("eval_accuracy", None)
            info.setdefault("normalization", None)
            info.setdefault("engine_up", None)
            info.setdefault("evaluation", None)
            for field in (
                "objectives",
                "score_objective",
                "source_format",
                "engine",
                "step_token",
            ):  # proto3's empty is the unset
                info[field] = info.get(field) or None
    return model_type.model_validate(data)
