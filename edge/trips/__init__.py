"""Trips and GPS visit routes: track cleaning, stop detection, odometer, storage, reports."""
