"""The daemon's two jobs, sequenced over the protocols: answering a question (`answerer`:
retrieve, pack, generate or answer extractively) and syncing the knowledge base
(`sync_runner`: one sync at a time, progress, the report). The pure rules they follow are in
`ragvisor.core` (`answers`, `sync`)."""
