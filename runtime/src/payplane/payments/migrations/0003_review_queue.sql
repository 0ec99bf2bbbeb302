-- The admin review queue: payments waiting for a decision, oldest first, without scanning the table.
create index payments_in_review on payments (seq) where status = 'requires_review';
