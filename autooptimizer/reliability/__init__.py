"""The reliability fault suite behind `autoopt bench faults`: crashes at every checkpoint of every cycle path,
faults injected mid-cycle, and the API under fuzz and load. Each check builds its own small real world (a tiny
search service, real git, real PDP and audit log) in a scratch AUTOOPT_HOME and returns the figures its test asserts
on and that `docs/reliability.md` quotes."""
