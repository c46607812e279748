"""Scheduling benchmark tasks over boards: a Ray head, stations, leases, retries.

``core`` holds the logic (no Ray), ``station`` runs tasks on boards, ``actors``
places both on Ray nodes and ``cluster`` starts or finds a head.
"""
