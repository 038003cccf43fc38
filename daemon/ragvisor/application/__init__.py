"""The daemon's two jobs, sequenced over the protocols: answering a question (`answerer`:
retrieve, pack, generate or answer extractively; `ask_cache`: the answer cache's scope and
metrics) and syncing the knowledge base
(`sync_runner`: one sync at a time, progress, the report; `document_writer`: a document
written or removed through the API and synced at once). The pure rules they follow are in
`ragvisor.core` (`answers`, `answer_cache`, `sync`)."""
