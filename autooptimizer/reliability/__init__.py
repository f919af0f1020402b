"""The reliability fault suite as callable checks: each returns the figures its test asserts on and that
`docs/reliability.md` quotes (and a bench command can print)."""
