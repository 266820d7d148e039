"""The site file's ``hub`` section: where the hub, its API and its proxy listen, and where its
state lives. Defaults come from the schema; nothing here spans other sections."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HubSettings:
    public_url: str
    state_dir: str
    keep_servers_on_restart: bool
    api_url: str
    connect_url: str  # "": api_url
    proxy_api_url: str
    external_proxy: bool
    services_host: str


def build_hub(d: Mapping[str, Any]) -> HubSettings:
    return HubSettings(
        public_url=d["public_url"],
        state_dir=d["state_dir"],
        keep_servers_on_restart=d["keep_servers_on_restart"],
        api_url=d["api_url"],
        connect_url=d["connect_url"],
        proxy_api_url=d["proxy_api_url"],
        external_proxy=d["external_proxy"],
        services_host=d["services_host"],
    )
