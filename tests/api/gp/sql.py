"""SQL on a test database (psycopg2)."""

import psycopg2
import psycopg2.extras


class Sql:
    """SQL on the test database as the superuser, autocommit (psql-like).

    sql("select ...", params) / sql.query(...) -> list of tuples (dicts with dicts=True);
    sql.one(...) -> first row or None; sql.scalar(...) -> first column of the first row;
    sql.execute(...) -> rowcount. Parameters use psycopg2's %s placeholders."""

    def __init__(self, url):
        # search_path: the API functions live in schema gp (sql/functions), as the server sees
        # them, so that tests call them by their plain names too.
        self.conn = psycopg2.connect(url, connect_timeout=10, application_name="gridpoints-tests",
                                     options="-c search_path=gp,public")
        self.conn.autocommit = True

    def query(self, q, params=None, dicts=False):
        factory = psycopg2.extras.RealDictCursor if dicts else None
        with self.conn.cursor(cursor_factory=factory) as cur:
            cur.execute(q, params)
            return cur.fetchall() if cur.description else []

    __call__ = query

    def one(self, q, params=None, dicts=False):
        rows = self.query(q, params, dicts)
        return rows[0] if rows else None

    def scalar(self, q, params=None):
        row = self.one(q, params)
        return row[0] if row else None

    def execute(self, q, params=None):
        with self.conn.cursor() as cur:
            cur.execute(q, params)
            return cur.rowcount

    def close(self):
        self.conn.close()
