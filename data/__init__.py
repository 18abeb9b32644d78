"""Preference data in, for whoever reads it (training, the judge, the server's canaries): where rows come from
(`sources`), the row shapes users have (`shapes`), the one in-memory shape (`schema`) and loading a source with
its bad-row report (`load`). No torch: the serving image reads canary files with it."""
