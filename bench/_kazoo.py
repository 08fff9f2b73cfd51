"""
What the benchmarks measuring raw kazoo share: a rate of kazoo async calls
kept C{window} in flight.
"""

import threading
import time


def windowedRate(n, window, call):
    """
    Make C{call(i)} for each C{i} below C{n}, each giving a kazoo async
    result, with at most C{window} of them in flight.

    @return: calls per second.
    """
    slots = threading.Semaphore(window)
    done = threading.Event()
    remaining = [n]
    lock = threading.Lock()

    def finished(_):
        slots.release()
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()
    started = time.perf_counter()
    for i in range(n):
        slots.acquire()
        call(i).rawlink(finished)
    done.wait(120)
    return n / (time.perf_counter() - started)
