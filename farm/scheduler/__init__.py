"""Scheduling benchmark tasks over boards: a Ray head, stations, leases, retries.

``core`` holds the logic and ``station`` runs tasks on boards (neither imports
Ray); ``messages`` are the typed records between them; ``actors`` places both on
Ray nodes and is the one place Ray's errors become farm's; ``cluster`` starts and
stops head and station nodes. Clients reach a head through ``farm.client``.
"""
