"""The hub's errors join the typed tree of xiaozhi.errors, so a caller can catch by kind."""

from __future__ import annotations

import pytest

from xiaozhi.errors import ConfigurationError, OperationFailed, StartupError, XiaozhiError
from xiaozhi_hub.bridge_api import RequestError
from xiaozhi_hub.executors import ExecutorError
from xiaozhi_hub.home import HomeConfigError
from xiaozhi_hub.http import ApiError
from xiaozhi_hub.pipeline import IntentsNotLoaded
from xiaozhi_hub.registry import RegistryError
from xiaozhi_hub.service import HubStartError
from xiaozhi_hub.settings import HubSettingsError


@pytest.mark.parametrize(
    ("error", "base"),
    [
        (HubStartError, StartupError),
        (HomeConfigError, ConfigurationError),
        (HubSettingsError, ConfigurationError),
        (RegistryError, OperationFailed),
        (RequestError, OperationFailed),
        (ExecutorError, OperationFailed),
        (IntentsNotLoaded, OperationFailed),
        (ApiError, XiaozhiError),
    ],
)
def test_each_hub_error_has_its_place(error: type[Exception], base: type[Exception]) -> None:
    assert issubclass(error, base)
    assert issubclass(error, XiaozhiError)


def test_an_api_error_keeps_its_fields() -> None:
    err = ApiError(404, "DEVICE_NOT_FOUND", "unknown device 'x'", {"id": "x"})
    assert (err.status, err.code, err.message, err.details) == (
        404,
        "DEVICE_NOT_FOUND",
        "unknown device 'x'",
        {"id": "x"},
    )
    assert str(err) == "unknown device 'x'"
