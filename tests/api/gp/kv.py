"""Redis for tests: Debian's python3-redis (redis-py), set up the way the tests use it.

kv.connect(url) -> a redis.Redis on one connection of its own, opened at once (so a Redis
that is down raises redis.exceptions.ConnectionError here, not at the first command),
replies decoded as UTF-8 str. Errors are redis-py's: redis.exceptions.ResponseError for an
error reply, ConnectionError / TimeoutError for the transport."""

import redis

DEFAULT_TIMEOUT = 5.0  # seconds for connect and for each reply


class Redis(redis.Redis):
    """redis.Redis whose close() also closes its socket (redis-py's only hands the connection
    back to the pool, which would leave one socket per test open until garbage collection)."""

    def close(self):
        super().close()
        self.connection_pool.disconnect()


def connect(url, *, timeout=DEFAULT_TIMEOUT, **kw):
    """A client of the Redis at `url` (redis://[user:password@]host:port/db); `kw` goes to
    redis-py's connection (password=..., username=..., decode_responses=False, ...)."""
    options = {"decode_responses": True, "socket_timeout": timeout,
               "socket_connect_timeout": timeout}
    options.update(kw)
    pool = redis.ConnectionPool.from_url(url, **options)
    try:
        return Redis(connection_pool=pool, single_connection_client=True)
    except BaseException:
        pool.disconnect()
        raise
