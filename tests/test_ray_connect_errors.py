"""Why `--executor ray --address HOST:PORT` could not join: the cause named, with its fix.

Ray ≥ 2.5x clusters require a token; a driver without one gets from `ray.init` a bare
`ConnectionError("Failed to connect to Ray cluster at …")` whose cause's *text* holds the real
`ray.exceptions.AuthenticationError` (seen with Ray 2.60 against `ray start --head` on
127.0.0.1). The chain below is built the way Ray builds it, with Ray's own exception type."""
from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")
from ray.exceptions import AuthenticationError  # noqa: E402

from pipeline.executors import ray as ray_executor  # noqa: E402

AUTH_TEXT = "RPC error: InvalidAuthToken: Authentication token is missing or incorrect."


def ray_init_failure(address: str = "10.0.0.5:6379") -> ConnectionError:
    """What ray.init raised: ConnectionError from RuntimeError("… Last connection error: <traceback>")."""
    last = f"Traceback (most recent call last):\n  File \"python/ray/includes/common.pxi\", line 119, in " \
           f"ray._raylet.check_status\nray.exceptions.AuthenticationError: {AuthenticationError(AUTH_TEXT)}"
    try:
        try:
            raise RuntimeError(f"Failed to connect to GCS. Last connection error: {last}")
        except RuntimeError as inner:
            raise ConnectionError(f"Failed to connect to Ray cluster at {address}") from inner
    except ConnectionError as err:
        return err


TOKEN = ("the cluster's token: RAY_AUTH_TOKEN, or the file ~/.ray/auth_token (`ray get-auth-token` on the head "
         "node prints it); see docs/cluster.md")


@pytest.fixture(autouse=True)
def _no_ray_env(monkeypatch):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)


def test_a_missing_token_is_named_with_the_fix():
    assert ray_executor.connect_error(ray_init_failure(), "10.0.0.5:6379") == (
        "the Ray cluster at 10.0.0.5:6379 requires an auth token and none was sent (AuthenticationError: "
        f"InvalidAuthToken); set RAY_AUTH_MODE=token and give {TOKEN}")


def test_a_wrong_token_is_named_with_the_fix(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert ray_executor.connect_error(ray_init_failure(), "10.0.0.5:6379") == (
        "the Ray cluster at 10.0.0.5:6379 refused this process's auth token (AuthenticationError: "
        f"InvalidAuthToken); give {TOKEN}")


def test_the_error_itself_or_via_ray_address_is_recognised_too(monkeypatch):
    """Ray may raise AuthenticationError directly (other call paths, other versions)."""
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    assert ray_executor.connect_error(AuthenticationError(AUTH_TEXT), None).startswith(
        "the Ray cluster at 10.0.0.7:6379 requires an auth token and none was sent")


def test_other_failures_keep_their_first_line():
    assert ray_executor.connect_error(ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379.\nmore"),
                                      "10.0.0.5:6379") == (
        "cannot start or reach the Ray cluster at 10.0.0.5:6379: Failed to connect to Ray cluster at 10.0.0.5:6379; "
        "start one with `ray start --head`, or leave out --address for a local one")


@pytest.mark.parametrize("failure", [ray_init_failure, lambda: AuthenticationError(AUTH_TEXT)],
                         ids=["wrapped", "direct"])
def test_connect_raises_the_named_cause_as_one_line(monkeypatch, failure):
    def init(**kwargs):
        raise failure()

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ray_executor.ExecutorError) as err:
        ray_executor._connect("10.0.0.5:6379")
    assert str(err.value).startswith("the Ray cluster at 10.0.0.5:6379 requires an auth token and none was sent")
    assert "\n" not in str(err.value)
