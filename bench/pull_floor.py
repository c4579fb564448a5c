"""The pull benchmark's floor: the least a server can do to page the staged sales, as a bare ASGI app under uvicorn.

``GET /?after=<changed_at>|<transaction_id>&limit=N`` runs one keyset query on ``staged_transactions`` (the same index
the pull API uses) and answers the stored records as they are, joined into a JSON array with the next position: no
key, no window, no rendering, no customers. ``python -m bench.pull_floor --db SYNC.db --port N``.
"""

from __future__ import annotations

import argparse
import sqlite3
from typing import Any
from urllib.parse import parse_qs

QUERY = ("SELECT changed_at, transaction_id, record FROM staged_transactions WHERE (changed_at, transaction_id) > (?, ?) "
         "ORDER BY changed_at, transaction_id LIMIT ?")


def app_for(path: str) -> Any:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        query = parse_qs(scope["query_string"].decode())
        moment, _, key = query.get("after", ["|"])[0].partition("|")
        limit = int(query.get("limit", ["1000"])[0])
        rows = db.execute(QUERY, (moment, key, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        after = f'"{rows[-1][0]}|{rows[-1][1]}"' if more else "null"
        body = ('{"next":' + after + ',"data":[' + ",".join(row[2] for row in rows) + "]}").encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pull_floor")
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(app_for(args.db), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
