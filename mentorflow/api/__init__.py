"""The HTTP API (issue #14): a thin, stateless edge in front of the Temporal contract.

Other systems speak HTTPS and JSON with an API key or a person's single-sign-on token;
every command becomes the `Relationship` workflow's update of the same name with the
same payload (`docs/contract.md`), and refusals keep the contract's codes. Nothing is
kept between requests but caches of data that never changes (a relationship's coordinators).

- `app.py`: the FastAPI application and what it is built from (`ApiContext`)
- `settings.py`: `ApiSettings.from_env()` (MENTORFLOW_API_*)
- `auth.py`: API keys and tokens → a `Credential`; who may act as whom
- `problems.py`: RFC 9457 problem responses with the refusal codes
- `limits.py`: body-size cap and per-credential rate limit
- `temporal.py`: calls to Temporal with a bounded wait (503 and Retry-After after it)
- `openapi.py`: the contract's JSON Schemas as the command endpoints' request bodies
- `routes/`: one module per resource
- `commands.py`: `mentorflow api` and `mentorflow api-keys …`
- `serving.py`: the API inside `./run dev` and tests (uvicorn in the running loop, through
  `mentorflow/embedded_http.py`, which serves the codec server too: one HTTP stack)

docs/api.md describes it for its users.
"""
