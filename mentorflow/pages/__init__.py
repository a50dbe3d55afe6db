"""Pages people open from their emails: signed action links (mentorflow/action_links.py)
answered with server-rendered HTML under /p/, served by `mentorflow api` (docs/people.md).

- `views`: what a page shows, as plain data (pure);
- `actions`: per kind of link, its page and the command a button press sends (pure);
- `writing`: the pages where people write at length — the agreement and a goal change (pure);
- `forms`: reading a submitted form, and `FormProblem` for what to fix (pure);
- `mute`: the page of an email's "Stop getting these emails" link (pure);
- `access`: whether a link may be used now (token, directory, relationship) and the CSRF pair;
- `routes`: the FastAPI router: GET and HEAD show, only POST acts.
"""
