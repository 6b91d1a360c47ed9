"""Request and response bodies of /profiles, /engines and /configs."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from tower.configs.values import VarValue

MAX_CONTENT_CHARS = 1_000_000


class ConfigBody(BaseModel):
    content: str = Field(max_length=MAX_CONTENT_CHARS)


class ConfigOut(BaseModel):
    type: str
    name: str
    content: str
    updated_at: datetime


class ConfigNames(BaseModel):
    type: str
    names: list[str]


class PromptVarOut(BaseModel):
    name: str
    type: str
    required: bool
    default: VarValue | None
    enum: list[VarValue] | None
    description: str


class ProfileOut(BaseModel):
    name: str
    description: str
    model: str | None
    engine: str | None
    prompt_vars: list[PromptVarOut]


class ProfileList(BaseModel):
    profiles: list[ProfileOut]


class EngineOut(BaseModel):
    id: str
    name: str
    description: str
    available: bool


class EngineList(BaseModel):
    engines: list[EngineOut]
