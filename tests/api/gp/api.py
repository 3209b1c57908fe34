"""A small HTTP client of one gridpointsd (requests)."""

import json

from gp.util import http_session

_UNSET = object()


class Api:
    """A small client of one server over requests.

    api.get(path, params=None, token=...), api.post(path, json_body, token=...,
    idempotency_key=..., body=raw_bytes_or_str, headers={...}), same for put/patch/delete.
    Returns the requests.Response (never raises on 4xx/5xx). token=None sends no
    Authorization; the default is the client's own token (api.with_token(t) binds one).
    api(other_server_or_url) -> a client of another server (same token)."""

    def __init__(self, target, token=None, timeout=10.0):
        self.base_url = (target if isinstance(target, str) else target.url).rstrip("/")
        self.token = token
        self.timeout = timeout
        self.http = http_session()

    def __call__(self, target=None, token=_UNSET):
        return Api(target or self.base_url, self.token if token is _UNSET else token,
                   self.timeout)

    def with_token(self, token):
        return Api(self.base_url, token, self.timeout)

    def request(self, method, path, json_body=_UNSET, *, token=_UNSET, idempotency_key=None,
                body=None, headers=None, params=None, timeout=None):
        h = {"Accept": "application/json"}
        token = self.token if token is _UNSET else token
        if token:
            h["Authorization"] = f"Bearer {token}"
        if idempotency_key is not None:
            h["Idempotency-Key"] = str(idempotency_key)
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else body
            h["Content-Type"] = "application/json"
        elif json_body is not _UNSET:
            data = json.dumps(json_body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        return self.http.request(method, self.base_url + path, data=data, headers=h,
                                 params=params, timeout=timeout or self.timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=_UNSET, **kw):
        return self.request("POST", path, json_body, **kw)

    def put(self, path, json_body=_UNSET, **kw):
        return self.request("PUT", path, json_body, **kw)

    def patch(self, path, json_body=_UNSET, **kw):
        return self.request("PATCH", path, json_body, **kw)

    def delete(self, path, json_body=_UNSET, **kw):
        return self.request("DELETE", path, json_body, **kw)

    def close(self):
        self.http.close()
