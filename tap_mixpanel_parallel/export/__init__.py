"""The raw event export (stream ``events``): date partitions fetched in parallel.

``stream`` runs on the main thread only; ``client``, ``records`` and ``worker`` run on worker
threads; ``runner`` hands work from one to the other; ``partitions`` and ``state`` are pure.
"""
