"""The devices room behind the bridge's real dispatcher, driven as the worker drives
it, for tests of what device topics mean (no broker, no threads)."""

from devices.bridge.directory import Directory
from devices.bridge.rooms import Dispatcher
from devices.mqtt import DevicesRoom


class DevicesCore:
    def __init__(self, directory: Directory | None = None) -> None:
        self.room = DevicesRoom()
        self.dispatcher = Dispatcher(rooms=[self.room], directory=directory)

    def handle(self, *args, **kwargs) -> bool:
        return self.dispatcher.handle(*args, **kwargs)

    def drain(self):
        """Everything collected since the last drain (the pools to broadcast too)."""
        return self.room.topics.drain()

    @property
    def effects(self):
        return self.room.topics.effects

    @property
    def directory(self) -> Directory:
        return self.dispatcher.directory

    @directory.setter
    def directory(self, value: Directory) -> None:
        self.dispatcher.directory = value

    @property
    def counters(self):
        return self.dispatcher.counters

    @property
    def awaiting(self):
        return self.room.topics.awaiting

    @awaiting.setter
    def awaiting(self, value) -> None:
        self.room.topics.awaiting = value
