-- A promise is "watched" once it has a callback or is the root of a task. Completing an
-- unwatched promise (the common case) then skips looking for callbacks and root tasks: the
-- flag comes free with the row the completion reads anyway.
ALTER TABLE promises ADD COLUMN watched INTEGER NOT NULL DEFAULT 0;
UPDATE promises SET watched = 1
WHERE id IN (SELECT promise_id FROM callbacks UNION SELECT root_promise_id FROM tasks);
